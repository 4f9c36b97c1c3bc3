{
	"patcher": {
		"fileversion": 1,
		"appversion": {
			"major": 8,
			"minor": 5,
			"revision": 6,
			"architecture": "x64",
			"modernui": 1
		},
		"classnamespace": "box",
		"rect": [
			80.0,
			80.0,
			900.0,
			640.0
		],
		"bglocked": 0,
		"openinpresentation": 0,
		"default_fontsize": 12.0,
		"default_fontface": 0,
		"default_fontname": "Arial",
		"gridonopen": 1,
		"gridsize": [
			15.0,
			15.0
		],
		"gridsnaponopen": 1,
		"objectsnaponopen": 1,
		"statusbarvisible": 2,
		"toolbarvisible": 1,
		"boxanimatetime": 200,
		"enablehscroll": 1,
		"enablevscroll": 1,
		"devicewidth": 0.0,
		"description": "help for wae.style",
		"digest": "",
		"tags": "",
		"style": "",
		"subpatcher_template": "",
		"assistshowspatchername": 0,
		"boxes": [
			{
				"box": {
					"id": "obj-1",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						20,
						10,
						700,
						40
					],
					"text": "wae.style NAME: one fader per style of the model (names: /wae/model/info.reply). Two of them here, piano and oboe (models/gm-orchestra has both)."
				}
			},
			{
				"box": {
					"id": "obj-2",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [
						20,
						560,
						90,
						22
					],
					"outlettype": [
						"",
						""
					],
					"text": "wae.client"
				}
			},
			{
				"box": {
					"id": "obj-3",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						140,
						560,
						500,
						40
					],
					"text": "one [wae.client] per Max session talks to the daemon (args: host port reply-port)"
				}
			},
			{
				"box": {
					"id": "obj-4",
					"maxclass": "slider",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						20,
						120,
						140,
						22
					],
					"outlettype": [
						""
					],
					"floatoutput": 1,
					"min": 0.0,
					"size": 2.0,
					"orientation": 1
				}
			},
			{
				"box": {
					"id": "obj-5",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						20,
						160,
						125,
						22
					],
					"outlettype": [
						""
					],
					"text": "wae.style piano"
				}
			},
			{
				"box": {
					"id": "obj-6",
					"maxclass": "slider",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						180,
						120,
						140,
						22
					],
					"outlettype": [
						""
					],
					"floatoutput": 1,
					"min": 0.0,
					"size": 2.0,
					"orientation": 1
				}
			},
			{
				"box": {
					"id": "obj-7",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						180,
						160,
						118,
						22
					],
					"outlettype": [
						""
					],
					"text": "wae.style oboe"
				}
			}
		],
		"lines": [
			{
				"patchline": {
					"source": [
						"obj-4",
						0
					],
					"destination": [
						"obj-5",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-6",
						0
					],
					"destination": [
						"obj-7",
						0
					]
				}
			}
		],
		"dependency_cache": [],
		"autosave": 0
	}
}
