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
		"description": "help for wae.note",
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
					"text": "wae.note: click the keyboard to play; the number boxes set velocity and seconds."
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
					"maxclass": "newobj",
					"numinlets": 3,
					"numoutlets": 1,
					"patching_rect": [
						20,
						300,
						76,
						22
					],
					"outlettype": [
						""
					],
					"text": "wae.note"
				}
			},
			{
				"box": {
					"id": "obj-5",
					"maxclass": "kslider",
					"numinlets": 2,
					"numoutlets": 2,
					"patching_rect": [
						20,
						120,
						340,
						22
					],
					"outlettype": [
						"",
						""
					],
					"mode": 0,
					"offset": 36,
					"range": 61
				}
			},
			{
				"box": {
					"id": "obj-6",
					"maxclass": "number",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [
						200,
						250,
						50,
						22
					],
					"outlettype": [
						"",
						""
					],
					"minimum": 1,
					"maximum": 127
				}
			},
			{
				"box": {
					"id": "obj-7",
					"maxclass": "flonum",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [
						300,
						250,
						50,
						22
					],
					"outlettype": [
						"",
						""
					],
					"minimum": 0.01,
					"format": 6
				}
			},
			{
				"box": {
					"id": "obj-8",
					"maxclass": "number",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [
						20,
						350,
						50,
						22
					],
					"outlettype": [
						"",
						""
					]
				}
			}
		],
		"lines": [
			{
				"patchline": {
					"source": [
						"obj-5",
						0
					],
					"destination": [
						"obj-4",
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
						"obj-4",
						1
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-7",
						0
					],
					"destination": [
						"obj-4",
						2
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-4",
						0
					],
					"destination": [
						"obj-8",
						0
					]
				}
			}
		],
		"dependency_cache": [],
		"autosave": 0
	}
}
