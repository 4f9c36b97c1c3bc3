// Unit tests of Wae against a running daemon: `TestWae.run` (inside a Routine, or on its own).
// The daemon is at 127.0.0.1 on $WAE_TEST_PORT (default 57130); the tests expect a model whose
// styles include flute and piano, and a render_dir on this machine. They change its controls.

TestWae : UnitTest {
	var wae, fails;

	setUp {
		wae = Wae(NetAddr("127.0.0.1", ("WAE_TEST_PORT".getenv ? "57130").asInteger));
		fails = List.new;
		wae.onFail = { |address, message| fails.add([address, message]) };
	}

	tearDown {
		wae.onFail = { |address, message| "waeserver refused %: %".format(address, message).warn };
		wae.onState = nil; wae.onNoteGo = nil;
	}

	// an answer within `seconds`, else nil
	answer { |call, seconds = 10|
		var got, cond = CondVar.new;
		call.value({ |reply| got = reply; cond.signalAll });
		cond.waitFor(seconds, { got.notNil });
		^got
	}

	test_info_has_named_fields {
		var info = this.answer { |done| wae.info(done) };
		this.assert(info.notNil, "an info reply");
		this.assert(info.styleNames.includes(\flute) and: { info.styleNames.includes(\piano) }, "style names");
		this.assert(info.latentSize.isKindOf(Integer) and: { info.latentSize > 0 }, "latentSize");
		this.assert(info.sampleRate.isKindOf(Integer) and: { info.sampleRate > 8000 }, "sampleRate");
		this.assert(info.name.isKindOf(String) and: { info.name.size > 0 }, "name");
		this.assertEquals(wae.styleNames, info.styleNames, "kept in the object");
	}

	test_status_has_named_fields {
		var st = this.answer { |done| wae.status(done) };
		this.assert(st.notNil, "a status reply");
		#[voices, xruns, cacheHits, cacheMisses, standIns].do { |key|
			this.assert(st[key].isKindOf(Integer), "% is an integer".format(key))
		};
		#[cpuLoad, renderMsP50, renderMsP99, noteLatencyMs, callbackMsMax].do { |key|
			this.assert(st[key].isKindOf(Float), "% is a float".format(key))
		};
		this.assert(st.device.isKindOf(String) and: { st.model == wae.lastInfo.name }, "device and model");
		this.assert(st.late.isNil or: { st.late.isKindOf(Integer) }, "late, when the daemon sends it");
	}

	test_a_refusal_is_reported_and_its_action_not_called {
		var called = false;
		wae.style(\noSuchStyle, 1, { called = true });
		this.wait({ fails.size > 0 }, "a /fail", 5);
		this.assertEquals(fails[0][0], '/wae/style', "the refused address");
		this.assert(fails[0][1].contains("noSuchStyle"), "the reason names the style");
		this.answer { |done| wae.sync(done) };
		this.assert(called.not, "the refused call's action");
	}

	test_actions_state_and_sync {
		var done = false, synced = false, states = List.new;
		wae.onState = { |key, values| if(key == \styles) { states.add(values) } };
		wae.style(\flute, 1.5, { done = true });
		wae.sync { synced = true };
		this.wait({ done and: { synced } }, "the action and the sync", 5);
		this.wait({ states.size > 0 }, "a state event", 5);
		this.assertFloatEquals(states.last[wae.styleNames.indexOf(\flute)], 1.5, "the fader moved");
		this.assertEquals(fails.size, 0, "nothing refused");
	}

	test_mix_z_and_presets {
		var names;
		this.assert(this.answer { |done| wae.mix(\piano, 0.25, \flute, 0.75, done) } == true, "mix accepted");
		this.assert(this.answer { |done| wae.z([0.5, -1, 0], done) } == true, "z accepted");
		this.assert(this.answer { |done| wae.zRandom(3, done) } == true, "zRandom accepted");
		this.assert(this.answer { |done| wae.presetSave(\unitTest, done) } == true, "preset saved");
		names = this.answer { |done| wae.presetList(done) };
		this.assert(names.includes(\unitTest), "the preset listed");
		this.assert(this.answer { |done| wae.presetLoad(\unitTest, done) } == true, "preset loaded");
		this.assertEquals(fails.size, 0, "nothing refused");
	}

	test_notes_start_and_end {
		var went = List.new;
		wae.onNoteGo = { |pitch| went.add(pitch) };
		wae.note(60, 100, 0.1);
		wae.noteOn(62, 90);
		this.wait({ went.includes(60) and: { went.includes(62) } }, "/wae/n_go of both notes", 5);
		wae.noteOff(62);
		wae.panic;
		this.wait({ wae.voices.isEmpty }, "every /wae/n_end", 5);
		this.assertEquals(fails.size, 0, "nothing refused");
	}

	test_patterns_play_in_timed_bundles {
		var went = List.new, player;
		wae.onNoteGo = { |pitch| went.add(pitch) };
		player = Pbind(\type, \wae, \wae, wae, \midinote, Pseq([64, 67, 71]), \dur, 0.1, \legato, 0.5,
			\latency, 0.2).play;
		this.wait({ went.includes(71) }, "the pattern's notes", 5);
		this.assertEquals(went.select { |p| [64, 67, 71].includes(p) }.asArray, [64, 67, 71], "in order");
		Pbind(\type, \waeStyle, \wae, wae, \style, \piano, \value, Pseq([0.25, 0.5]), \dur, 0.05).play;
		this.assert(this.answer { |done| 0.4.wait; wae.sync(done) }.notNil, "synced after the fader moves");
		this.assertEquals(fails.size, 0, "nothing refused");
	}

	test_morph_is_a_routine_that_ends_on_the_target {
		var states = List.new, routine = wae.morph(\piano, \flute, 0.2, 4);
		this.assert(routine.isKindOf(Routine), "a Routine");
		wae.onState = { |key, values| if(key == \styles) { states.add(values) } };
		routine.play;
		this.wait({ states.size >= 5 }, "five mixes", 5);
		this.assertFloatEquals(states.last[wae.styleNames.indexOf(\flute)], 1.0, "flute at the end");
		this.assertFloatEquals(states.last[wae.styleNames.indexOf(\piano)], 0.0, "piano at the end");
	}

	test_render_writes_a_note_file {
		var reply = this.answer { |done| wae.render(\unitTestNote, 60, 90, done) };
		this.assert(reply.notNil, "a render reply");
		this.assertEquals(reply.name, \unitTestNote, "its name");
		this.assert(File.exists(reply.path), "the file exists at " ++ reply.path);
		this.assert(reply.frames > 1000 and: { reply.sampleRate > 8000 }, "frames and rate");
		wae.render("../escape", 60);
		this.wait({ fails.size > 0 }, "a bad name refused", 5);
		this.assertEquals(fails[0][0], '/wae/render', "refused");
	}

	test_encode_sets_the_latent_point_and_a_refused_sample_changes_nothing {
		var path = PathName.tmp +/+ "wae-unit-test-%.wav".format(Date.getDate.stamp), rate = 22050, file;
		var size = this.answer { |done| wae.info(done) }.latentSize, point, zs = List.new, called = false, count;
		// a second of A4 with a 10 ms attack and a decay: a clear pitch for the daemon's checks
		var wave = Signal.fill(rate, { |i| var t = i / rate; sin(2pi * 440 * t) * 0.5 * min(t / 0.01, 1) * exp(-2 * t) });
		file = SoundFile.new.headerFormat_("WAV").sampleFormat_("float").numChannels_(1).sampleRate_(rate);
		this.assert(file.openWrite(path), "the test's WAV opened at " ++ path);
		file.writeData(wave);
		file.close;
		wae.onState = { |key, values| if(key == \z) { zs.add(values) } };
		this.assert(this.answer { |done| wae.z(0 ! size, done) } == true, "z at the origin first");
		point = this.answer { |done| wae.encode(path, done) };
		File.delete(path);
		this.assert(point.notNil, "an encode reply");
		this.assertEquals(point.size, size, "one number per latent dimension");
		this.assert(point.every(_.isKindOf(Float)) and: { point.any(_ != 0) }, "floats, away from the origin");
		this.wait({ zs.any { |z| (z - point).abs.maxItem < 1e-5 } }, "/wae/state z with the point", 5);
		count = zs.size;
		// out of range (0.1 to 10 s): refused, its action not called, the point where it was
		wae.sample(0.05, { called = true });
		wae.encode("/nonexistent/wae-unit-test.wav");
		this.wait({ fails.size >= 2 }, "two refusals", 5);
		this.assertEquals(fails.collect(_.first), ['/wae/sample/record', '/wae/encode'], "the refused addresses");
		this.assert(fails[1][1].contains("no such file"), "the reason names the missing file");
		this.answer { |done| wae.sync(done) };
		this.assert(called.not, "the refused sample's action");
		this.assertEquals(zs.size, count, "no z change after the refusals");
	}
}
