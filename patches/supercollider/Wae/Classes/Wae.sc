// Wae: the SuperCollider client of waeserver, a neural instrument. See Wae.schelp.
//
// One object per daemon address (Wae(addr) twice gives the same one); it subscribes to the
// daemon's events (/wae/notify 1) when it is made. A command given an action is followed by
// /wae/sync: the action runs at /wae/synced unless a /fail for its address came first (the daemon
// answers a refusal at once, the sync once every earlier command has taken effect), so actions
// do not depend on /done, which time-tagged bundles answer only at their time. Queries are matched
// to their replies in order, per address (UDP keeps the order on one host).

Wae {
	classvar <all, <>default, <statusKeys, <infoKeys;

	var <addr, <>onFail, <>onState, <>onNoteGo, <>onNoteEnd, <>onLate;
	var <lastInfo, <lastStatus, <presets, <voices;
	var pending, waiting, syncId = 0, responders, renderCount = 0;

	*initClass {
		all = IdentityDictionary.new;
		// /wae/status.reply in order: the contract's ten, then stand-ins, slowest callback, late bundles
		statusKeys = #[voices, xruns, cpuLoad, renderMsP50, renderMsP99, noteLatencyMs, cacheHits, cacheMisses,
			device, model, standIns, callbackMsMax, late];
		Class.initClassTree(Event);
		// Pattern notes: the pitch from the usual keys (degree, note, midinote, freq), the duration
		// from the sustain (dur * legato, in seconds at the clock's tempo), the velocity from
		// \velocity or else amp * 127; sent as one bundle tagged with the event's latency.
		Event.addEventType(\wae, { |server|
			var wae = ~wae ?? { Wae.default ?? { Wae.new } };
			var seconds = ~sustain.value / thisThread.clock.tempo;
			var velocity = (~velocity ?? { ~amp.value * 127 }).asArray;
			var pitches = ~detunedFreq.value.cpsmidi.round(1).asArray;
			wae.sendTimed(Wae.eventLatency(server), pitches.collect { |pitch, i|
				['/wae/note', pitch.asInteger, velocity.wrapAt(i).round.clip(1, 127).asInteger, seconds.asFloat]
			});
		}, (amp: 100 / 127));
		// Fader moves from a pattern: \style and \value (arrays move several faders in one bundle).
		Event.addEventType(\waeStyle, { |server|
			var wae = ~wae ?? { Wae.default ?? { Wae.new } };
			wae.sendTimed(Wae.eventLatency(server), [~style.asArray, ~value.asArray].flop.collect { |pair|
				['/wae/style', pair[0].asString, pair[1].asFloat]
			});
		});
	}

	// Seconds ahead for the playing event (currentEnvironment): its ~latency, else its server's,
	// plus its ~lag and ~timingOffset, as scsynth's note events are timed.
	*eventLatency { |server|
		^(~latency ?? { server !? { server.latency } } ? 0) + (~lag ? 0) + ((~timingOffset ? 0) / thisThread.clock.tempo)
	}

	*new { |netAddr|
		var key;
		netAddr = netAddr ?? { NetAddr("127.0.0.1", 57130) };
		key = "%:%".format(netAddr.ip, netAddr.port).asSymbol;
		^all[key] ?? {
			var wae = super.new.init(netAddr);
			all[key] = wae;
			default = default ? wae;
			wae
		}
	}

	init { |netAddr|
		addr = netAddr;
		pending = IdentityDictionary.new;
		waiting = List.new;   // [sync id, address, action, refused] of commands given an action, and syncs
		voices = Set.new;
		presets = [];
		onFail = { |address, message| "waeserver refused %: %".format(address, message).warn };
		responders = [
			this.prOn('/done', { |msg| if(msg[1].asSymbol == '/wae/model/load') { this.prAnswer(msg[1], true) } }),
			this.prOn('/fail', { |msg|
				var address = msg[1].asSymbol, message = msg[2..].join(" "), command;
				// the refused call's action is not called: a query's is dropped, a command's marked
				if(pending[address].size > 0) { this.prTake(address) } {
					command = waiting.detect { |w| w[1] == address and: { w[3].not } };
					command !? { command[3] = true };
				};
				onFail.value(address, message, this);
			}),
			this.prOn('/wae/model/info.reply', { |msg|
				lastInfo = (name: msg[1].asString, latentSize: msg[2].asInteger, sampleRate: msg[3].asInteger,
					styleNames: msg[4..].collect(_.asSymbol));
				this.prAnswer('/wae/model/info', lastInfo);
			}),
			this.prOn('/wae/status.reply', { |msg|
				lastStatus = ();
				statusKeys.do { |key, i| lastStatus[key] = msg[i + 1] };
				lastStatus.device = lastStatus.device.asString;
				lastStatus.model = lastStatus.model.asString;
				this.prAnswer('/wae/status', lastStatus);
			}),
			this.prOn('/wae/preset/list.reply', { |msg|
				presets = msg[1..].collect(_.asSymbol);
				this.prAnswer('/wae/preset/list', presets);
			}),
			this.prOn('/wae/render.reply', { |msg|
				this.prAnswer('/wae/render', (name: msg[1].asSymbol, path: msg[2].asString,
					frames: msg[3].asInteger, sampleRate: msg[4].asInteger));
			}),
			// the latent point set from a take or a file, answered to the request's address
			this.prOn('/wae/sample.reply', { |msg| this.prAnswer('/wae/sample/record', msg[1..].collect(_.asFloat)) }),
			this.prOn('/wae/encode.reply', { |msg| this.prAnswer('/wae/encode', msg[1..].collect(_.asFloat)) }),
			this.prOn('/wae/version.reply', { |msg| this.prAnswer('/wae/version', msg[1..].collect(_.asString)) }),
			this.prOn('/wae/synced', { |msg|
				var id = msg[1].asInteger, done = waiting.select { |w| w[0] <= id };
				waiting.removeAll(done);   // earlier ones whose sync was lost too
				done.do { |w| if(w[0] == id and: { w[3].not }) { w[2].value(if(w[1].isNil) { this } { true }, this) } };
			}),
			this.prOn('/wae/n_go', { |msg| voices.add(msg[1].asInteger); onNoteGo.value(msg[1].asInteger, this) }),
			this.prOn('/wae/n_end', { |msg| voices.remove(msg[1].asInteger); onNoteEnd.value(msg[1].asInteger, this) }),
			this.prOn('/wae/state', { |msg| onState.value(msg[1].asSymbol, msg[2..], this) }),
			this.prOn('/wae/late', { |msg| onLate.value(msg[1], msg[2].asSymbol, this) })
		];
		this.notify(1);
		this.info;
	}

	free {
		responders.do(_.free);
		all.removeAt("%:%".format(addr.ip, addr.port).asSymbol);
		if(default === this) { default = nil };
	}

	// What the daemon told us.
	styleNames { ^lastInfo !? { lastInfo.styleNames } ? [] }
	latentSize { ^lastInfo !? { lastInfo.latentSize } }

	// --- notes ------------------------------------------------------------------------------------
	note { |pitch, velocity = 100, duration, action|
		var msg = ['/wae/note', pitch.round.asInteger, velocity.round.asInteger];
		if(duration.notNil) { msg = msg.add(duration.asFloat) };
		this.prSend(action, msg)
	}
	noteOn { |pitch, velocity = 100, action|
		this.prSend(action, ['/wae/noteon', pitch.round.asInteger, velocity.round.asInteger])
	}
	noteOff { |pitch, action| this.prSend(action, ['/wae/noteoff', pitch.round.asInteger]) }
	panic { |action| this.prSend(action, ['/wae/panic']) }

	// --- controls ---------------------------------------------------------------------------------
	style { |name, value, action| this.prSend(action, ['/wae/style', name.asString, value.asFloat]) }
	styles { |values, action| this.prSend(action, ['/wae/styles'] ++ values.collect(_.asFloat)) }
	// mix(\piano, 0.3, \oboe, 0.7): the named faders, the others to 0; a Function last is the action
	mix { |... pairs|
		var action = if(pairs.size.odd and: { pairs.last.isKindOf(Function) }) { pairs.pop };
		this.prSend(action, ['/wae/mix'] ++ pairs.clump(2).collect { |p| [p[0].asString, p[1].asFloat] }.flatten)
	}
	z { |point, action| this.prSend(action, ['/wae/z'] ++ point.asArray.collect(_.asFloat)) }
	zRandom { |seed, action|
		this.prSend(action, if(seed.isNil) { ['/wae/z/random'] } { ['/wae/z/random', seed.asInteger] })
	}
	zMode { |mode, action| this.prSend(action, ['/wae/z/mode', mode.asString]) }   // \fixed or 'per-note'
	gain { |value, action| this.prSend(action, ['/wae/gain', value.asFloat]) }
	releaseTime { |seconds, action| this.prSend(action, ['/wae/release', seconds.asFloat]) }
	bendRange { |semitones, action| this.prSend(action, ['/wae/bend_range', semitones.asFloat]) }
	learn { |target, action| this.prSend(action, ['/wae/learn', target.asString]) }

	// --- presets, model, session ------------------------------------------------------------------
	presetSave { |name, action| this.prSend(action, ['/wae/preset/save', name.asString]) }
	presetLoad { |name, action| this.prSend(action, ['/wae/preset/load', name.asString]) }
	presetList { |action| this.prQuery(action, ['/wae/preset/list']) }        // action.(names)
	loadModel { |path, action| this.prQuery(action, ['/wae/model/load', path.asString]) }   // action when it plays
	info { |action| this.prQuery(action, ['/wae/model/info']) }               // action.(info)
	status { |action| this.prQuery(action, ['/wae/status']) }                 // action.(status)
	version { |action| this.prQuery(action, ['/wae/version']) }               // action.([program, version])
	notify { |on = 1, action| this.prSend(action, ['/wae/notify', on.asInteger]) }
	// action once every command sent before has taken effect
	sync { |action| this.prSync(nil, action) }

	// --- notes as files and buffers ---------------------------------------------------------------
	// The daemon renders one note with its current controls to render_dir/NAME.wav on its machine;
	// action.((name, path, frames, sampleRate))
	render { |name, pitch, velocity = 100, action|
		this.prQuery(action, ['/wae/render', name.asString, pitch.round.asInteger, velocity.round.asInteger])
	}
	// The same, then Buffer.read on `server` (which must see the daemon's files); action.(buffer)
	renderBuffer { |server, pitch, velocity = 100, action, name|
		server = server ? Server.default;
		name = name ?? {
			renderCount = renderCount + 1;
			"sc-%-%-%".format(Date.getDate.stamp, pitch.round.asInteger, renderCount)
		};
		this.render(name, pitch, velocity, { |reply| Buffer.read(server, reply.path, action: action) })
	}

	// --- live sampling -----------------------------------------------------------------------------
	// `seconds` (0.1 to 10) of the daemon's JACK input in_1, or a sound file on its machine, encoded:
	// the latent point is set from the note; action.(point), an Array of Floats
	sample { |seconds, action| this.prQuery(action, ['/wae/sample/record', seconds.asFloat]) }
	encode { |path, action| this.prQuery(action, ['/wae/encode', path.asString]) }

	// A Routine fading style `from` into style `to` over `seconds`, in `steps` + 1 /wae/mix messages.
	morph { |from, to, seconds = 8, steps = 64|
		^Routine {
			(0..steps).do { |i|
				var t = i / steps;
				this.mix(from, 1 - t, to, t);
				if(i < steps) { (seconds / steps).wait };
			}
		}
	}

	// Messages as one bundle `latency` seconds ahead of the current logical time (nil: at once).
	sendTimed { |latency, msgs|
		if(latency.isNil) { msgs.do { |msg| addr.sendMsg(*msg) } } { addr.sendBundle(latency, *msgs) };
	}

	// --- private ----------------------------------------------------------------------------------
	prOn { |address, func| ^OSCFunc({ |msg| func.value(msg) }, address, addr).fix }

	// A command; with an action, followed by a sync that runs it (see the top of this file).
	prSend { |action, msg|
		addr.sendMsg(*msg);
		if(action.notNil) { this.prSync(msg[0].asSymbol, action) };
	}

	prSync { |address, action|
		syncId = syncId % 0x7FFFFFFF + 1;
		waiting.add([syncId, address, action, false]);
		if(waiting.size > 1024) { waiting.removeAt(0) };   // a daemon that never answers
		addr.sendMsg('/wae/sync', syncId);
	}

	// A query: its reply (or /fail) answers the oldest one waiting at that address.
	prQuery { |action, msg|
		this.prExpect(msg[0].asSymbol, action);
		addr.sendMsg(*msg);
	}

	// At most 1024 queries wait per address (a daemon that never answers).
	prExpect { |address, action|
		var queue = pending[address];
		if(queue.isNil) { queue = LinkedList.new; pending[address] = queue };
		queue.add(action);
		if(queue.size > 1024) { queue.popFirst };
	}
	prTake { |address| ^pending[address.asSymbol] !? { |queue| queue.popFirst } }
	prAnswer { |address, value| this.prTake(address).value(value, this) }
}
