"""OSC: the address table, free of any transport.

:data:`ADDRESSES` says what each address takes and answers (type tags, arguments, reply); the OSC
section of docs/reference.md is generated from it (``python -m waeserver.cli.reference``).
:class:`Commands` is the address table, free of any transport: each address has a handler, an
argument count range and whether it changes state (and so answers ``/done address`` to a
subscribed sender). A handler checks every argument before it changes anything and raises
:class:`~waeserver.live.controls.ControlError` to refuse; the refusal becomes ``/fail address message``.
The offline renderer drives the same table from its automation timeline.
UDP is waeserver.live.osc_server's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pythonosc.osc_message_builder import OscMessageBuilder

from waeserver import __version__
from waeserver.live.controls import (
    BEND_MAX,
    GAIN_MAX,
    MIDI_MAX,
    PORT_MAX,
    RELEASE_MAX,
    STYLE_MAX,
    TARGETS,
    Z_MAX,
    Z_MODES,
    ControlError,
    number,
    whole,
)
from waeserver.live.sampling import RECORD_MAX_S, RECORD_MIN_S
from waeserver.live.voices import NotQueued

log = logging.getLogger(__name__)

Address = tuple[str, int]


def osc_str(value, what: str) -> str:
    if not isinstance(value, str):
        raise ControlError(f"{what} must be a string, got {type(value).__name__}")
    return value


def encode(address: str, args: list) -> bytes:
    msg = OscMessageBuilder(address)
    for a in args:
        msg.add_arg(a)
    return msg.build().dgram


@dataclass(frozen=True)
class OscSpec:
    """What one address takes and answers, as docs/reference.md lists it (generated from :data:`ADDRESSES`).

    ``tags`` is a regular expression over the type tags it accepts (i int, f float, s string; a whole
    float passes for an int), ``args`` and ``effect`` say it in words, ``reply`` is what comes back
    besides ``/done`` and ``/fail`` ("" for nothing).
    """

    tags: str
    args: str
    effect: str
    reply: str = ""


# The address space, one entry per row of Commands.table (tests/live/test_osc.py keeps the two in step).
ADDRESSES: dict[str, OscSpec] = {
    "/wae/note": OscSpec(r"i|ii|iif", "i pitch, [i velocity=100], [f duration_s]",
                         "play a note; with a duration, released after it"),
    "/wae/noteon": OscSpec(r"ii", "i pitch, i velocity", "start a note (velocity 0 = off)"),
    "/wae/noteoff": OscSpec(r"i", "i pitch", "release a note"),
    "/wae/panic": OscSpec(r"", "", "every voice off with a short fade"),
    "/wae/style": OscSpec(r"sf", "s name, f value",
                          f"set one style fader, 0 to {STYLE_MAX:g}; above 1 over-drives the style"),
    "/wae/styles": OscSpec(r"f+", "f ... (one per style, model order)", "set every fader at once"),
    "/wae/mix": OscSpec(r"(sf)+", "s name, f w, s name, f w, ...", "set the named faders, the others to 0"),
    "/wae/z": OscSpec(r"f+", "f ... (one per latent dimension)", "set the latent point"),
    "/wae/z/random": OscSpec(r"i?", "[i seed]", "draw the latent point from the prior"),
    "/wae/z/mode": OscSpec(r"s", "s " + " or ".join(f"`{m}`" for m in Z_MODES),
                           "one latent point for all notes, or a fresh draw per note"),
    "/wae/gain": OscSpec(r"f", "f gain", f"master gain, 0 to {GAIN_MAX:g}"),
    "/wae/release": OscSpec(r"f", "f seconds", f"release time, 0 to {RELEASE_MAX:g} s"),
    "/wae/bend_range": OscSpec(r"f", "f semitones", f"pitch-bend range, 0 to {BEND_MAX:g} semitones"),
    "/wae/learn": OscSpec(r"s", "s target (" + ", ".join(f"`{t}`" for t in TARGETS) + ")",
                          "bind the next MIDI CC moved to that target"),
    "/wae/preset/save": OscSpec(r"s", "s name", "snapshot every control to `preset_dir/NAME.yaml`"),
    "/wae/preset/load": OscSpec(r"s", "s name", "recall a preset"),
    "/wae/preset/list": OscSpec(r"", "", "the saved presets", "`/wae/preset/list.reply` s name ..."),
    "/wae/model/load": OscSpec(r"s", "s path or name",
                               "load, warm up and swap a bundle without stopping audio (`/done` when it plays)"),
    "/wae/model/info": OscSpec(r"", "", "the model's description",
                               "`/wae/model/info.reply` s name, i latent_size, i sample_rate, s style ..."),
    "/wae/status": OscSpec(r"", "", "the daemon's figures",
                           "`/wae/status.reply` i voices, i xruns, f cpu_load, f render_ms_p50, f render_ms_p99, "
                           "f note_latency_ms, i cache_hits, i cache_misses, s device, s model, i stand_ins, "
                           "f callback_ms_max, i late_bundles"),
    "/wae/notify": OscSpec(r"ii?", "i 0 or 1, [i port]",
                           "subscribe the sender (replies and events to `port`, default its own) or unsubscribe",
                           "`/done /wae/notify` on subscribing"),
    "/wae/sync": OscSpec(r"i", "i id", "a marker behind every earlier command",
                         "`/wae/synced` i id, once every earlier command has taken effect"),
    "/wae/version": OscSpec(r"", "", "the program and its version", "`/wae/version.reply` s `waeserver`, s version"),
    "/wae/render": OscSpec(r"sii?", "s name, i pitch, [i velocity=100]",
                           "render one note with the current controls to `render_dir/NAME.wav`",
                           "`/wae/render.reply` s name, s absolute path, i frames, i sample_rate"),
    "/wae/encode": OscSpec(r"s", "s path",
                           "encode the note of a sound file on the server's machine (WAV, FLAC or AIFF, any rate) "
                           "and set the latent point from it", "`/wae/encode.reply` f ... (the latent point)"),
    "/wae/sample/record": OscSpec(r"f", f"f seconds ({RECORD_MIN_S:g} to {RECORD_MAX_S:g})",
                                  "record that long from JACK's `in_1` (from the next period), encode the note "
                                  "it holds and set the latent point", "`/wae/sample.reply` f ... (the latent point)"),
}


def sampled(answer: Callable[[tuple], None], address: str, reply: str) -> Callable[[list | None, str | None], None]:
    """The sampler's ``done(point, error)`` answering ``address``: ``reply`` with the point, or ``/fail``."""
    return lambda point, error: answer(("/fail", [address, error]) if error else (reply, point))


class Commands:
    """The OSC address table over an instrument (see ``waeserver.live.instrument.Instrument``).

    ``send(dest, address, args)`` delivers asynchronous replies (model loads, syncs) and events;
    the server sets it, the offline renderer leaves it quiet. ``subscribers`` maps a sender to
    the address its notifications and replies go to. Control changes of the instrument are
    sent to every subscriber as ``/wae/state key values...``.
    """

    def __init__(self, inst, send: Callable[[Address, str, list], None] | None = None):
        self.inst = inst
        self.send = send or (lambda dest, address, args: None)
        self.subscribers: dict[Address, Address] = {}
        self.late = 0   # time-tagged bundles that came (or were run) after their time
        inst.notify = lambda key, values: self.broadcast("/wae/state", [key, *values])
        # address: (handler, fewest args, most args or None, changes state)
        self.table: dict[str, tuple[Callable, int, int | None, bool]] = {
            "/wae/note": (self.note, 1, 3, True),
            "/wae/noteon": (self.noteon, 2, 2, True),
            "/wae/noteoff": (self.noteoff, 1, 1, True),
            "/wae/panic": (self.panic, 0, 0, True),
            "/wae/style": (self.style, 2, 2, True),
            "/wae/styles": (self.styles, 1, None, True),
            "/wae/mix": (self.mix, 2, None, True),
            "/wae/z": (self.z, 1, None, True),
            "/wae/z/random": (self.z_random, 0, 1, True),
            "/wae/z/mode": (self.z_mode, 1, 1, True),
            "/wae/gain": (self.gain, 1, 1, True),
            "/wae/release": (self.release, 1, 1, True),
            "/wae/bend_range": (self.bend_range, 1, 1, True),
            "/wae/learn": (self.learn, 1, 1, True),
            "/wae/preset/save": (self.preset_save, 1, 1, True),
            "/wae/preset/load": (self.preset_load, 1, 1, True),
            "/wae/preset/list": (self.preset_list, 0, 0, False),
            "/wae/model/load": (self.model_load, 1, 1, False),
            "/wae/model/info": (self.model_info, 0, 0, False),
            "/wae/status": (self.status, 0, 0, False),
            "/wae/notify": (self.notify, 1, 2, False),
            "/wae/sync": (self.sync, 1, 1, False),
            "/wae/version": (self.version, 0, 0, False),
            "/wae/render": (self.render, 2, 3, False),
            "/wae/encode": (self.encode_file, 1, 1, False),
            "/wae/sample/record": (self.sample_record, 1, 1, False),
        }

    def report_late(self, seconds: float, address: str) -> None:
        """A bundle ran ``seconds`` after its time tag: counted, and ``/wae/late`` to subscribers."""
        self.late += 1
        self.broadcast("/wae/late", [float(seconds), address])

    def broadcast(self, address: str, args: list) -> None:
        """Send an event to every subscriber."""
        for dest in list(self.subscribers.values()):
            self.send(dest, address, args)

    def reply_to(self, sender: Address | None) -> Address | None:
        return self.subscribers.get(sender, sender) if sender is not None else None

    def apply(self, address: str, args: list, sender: Address | None = None) -> list[tuple[str, list]]:
        """Run one message; the replies for the sender. Refusals become ``/fail address message``."""
        entry = self.table.get(address)
        try:
            if entry is None:
                raise ControlError(f"unknown address {address}")
            handler, low, high, changes = entry
            if len(args) < low or (high is not None and len(args) > high):
                expect = f"{low}" if low == high else f"{low} to {high}" if high is not None else f"at least {low}"
                raise ControlError(f"expected {expect} arguments, got {len(args)}")
            replies = handler(list(args), sender) or []
        except (ControlError, NotQueued) as exc:
            return [("/fail", [address, str(exc)])]
        if changes and sender in self.subscribers:
            replies.append(("/done", [address]))
        return replies

    # --- notes ---------------------------------------------------------------------------------
    def _pitch(self, value) -> int:
        pitch = whole(value, "pitch", 0, MIDI_MAX)
        low, high = self.inst.cache.low, self.inst.cache.high
        if not low <= pitch <= high:
            raise ControlError(f"pitch {pitch} is outside the model's range {low}..{high}")
        return pitch

    def note(self, args, sender):
        pitch = self._pitch(args[0])
        velocity = whole(args[1], "velocity", 1, MIDI_MAX) if len(args) > 1 else 100
        hold = -1
        if len(args) > 2:
            hold = max(1, int(number(args[2], "duration", 0.001, 3600.0) * self.inst.pool.rate))
        self.inst.pool.note_on(pitch, self.inst.velocity_gain(velocity), hold, velocity)

    def noteon(self, args, sender):
        pitch = self._pitch(args[0])
        velocity = whole(args[1], "velocity", 0, MIDI_MAX)
        if velocity == 0:
            self.inst.pool.note_off(pitch)
        else:
            self.inst.pool.note_on(pitch, self.inst.velocity_gain(velocity), velocity=velocity)

    def noteoff(self, args, sender):
        self.inst.pool.note_off(self._pitch(args[0]))

    def panic(self, args, sender):
        self.inst.pool.panic()

    # --- controls ------------------------------------------------------------------------------
    def style(self, args, sender):
        self.inst.state.set_style(osc_str(args[0], "style name"), number(args[1], "style value", 0.0, STYLE_MAX))

    def styles(self, args, sender):
        self.inst.state.set_styles([number(v, "style value", 0.0, STYLE_MAX) for v in args])

    def mix(self, args, sender):
        if len(args) % 2:
            raise ControlError("expected name, weight pairs")
        weights = {}
        for name, w in zip(args[0::2], args[1::2]):
            weights[osc_str(name, "style name")] = number(w, "style value", 0.0, STYLE_MAX)
        self.inst.state.set_mix(weights)

    def z(self, args, sender):
        self.inst.state.set_z([number(v, "z", -Z_MAX, Z_MAX) for v in args])

    def z_random(self, args, sender):
        seed = whole(args[0], "seed", 0, 2**31 - 1) if args else None
        self.inst.state.random_z(seed)

    def z_mode(self, args, sender):
        self.inst.state.set_z_mode(osc_str(args[0], "z mode"))

    def gain(self, args, sender):
        self.inst.state.set_gain(number(args[0], "gain", 0.0, GAIN_MAX))

    def release(self, args, sender):
        self.inst.state.set_release(number(args[0], "release", 0.0, RELEASE_MAX))

    def bend_range(self, args, sender):
        self.inst.state.set_bend_range(number(args[0], "bend range", 0.0, BEND_MAX))

    def learn(self, args, sender):
        self.inst.learn(self.inst.state.check_target(osc_str(args[0], "learn target")))

    # --- presets and model ---------------------------------------------------------------------
    def preset_save(self, args, sender):
        self.inst.save_preset(osc_str(args[0], "preset name"))

    def preset_load(self, args, sender):
        self.inst.load_preset(osc_str(args[0], "preset name"))

    def preset_list(self, args, sender):
        return [("/wae/preset/list.reply", self.inst.presets.list())]

    def model_load(self, args, sender):
        path = osc_str(args[0], "model path")
        dest, subscribed = self.reply_to(sender), sender in self.subscribers

        def done(error: str | None) -> None:
            if dest is None:
                return
            if error is not None:
                self.send(dest, "/fail", ["/wae/model/load", error])
            elif subscribed:
                self.send(dest, "/done", ["/wae/model/load"])

        self.inst.load_model(path, done)

    def render(self, args, sender):
        """``/wae/render name pitch [velocity]``: replied when the file is written (at once offline)."""
        name = osc_str(args[0], "render name")
        pitch = self._pitch(args[1])
        velocity = whole(args[2], "velocity", 1, MIDI_MAX) if len(args) > 2 else 100

        def run(answer):
            def done(path, frames, rate, error) -> None:
                answer(("/fail", ["/wae/render", error]) if error else
                       ("/wae/render.reply", [name, str(path), frames, rate]))

            self.inst.render_file(name, pitch, velocity, done)

        return self._answer(sender, run)

    def encode_file(self, args, sender):
        """``/wae/encode path``: replied with the latent point once set (at once offline)."""
        path = osc_str(args[0], "path")
        return self._answer(sender, lambda answer: self.inst.encode_file(path, sampled(answer, "/wae/encode",
                                                                                      "/wae/encode.reply")))

    def sample_record(self, args, sender):
        """``/wae/sample/record seconds``: replied with the latent point once the take is encoded and set."""
        seconds = number(args[0], "seconds", RECORD_MIN_S, RECORD_MAX_S)
        return self._answer(sender, lambda answer: self.inst.sample(seconds, sampled(answer, "/wae/sample/record",
                                                                                     "/wae/sample.reply")))

    def _answer(self, sender, run) -> list:
        """``run(answer)`` starts work that calls ``answer(reply)`` once: before the handler returns
        (offline, a file written at once) it is an ordinary reply, later it is sent to the sender."""
        dest, now = self.reply_to(sender), []

        def answer(reply) -> None:
            if now is not None:
                now.append(reply)
            elif dest is not None:
                self.send(dest, *reply)

        run(answer)
        replies, now = now, None
        return replies

    def model_info(self, args, sender):
        b = self.inst.bundle
        return [("/wae/model/info.reply", [b.name, b.latent_size, b.sample_rate, *b.styles])]

    def status(self, args, sender):
        s = self.inst.status()
        return [("/wae/status.reply", [s["voices"], s["xruns"], s["cpu_load"], s["render_ms_p50"],
                                       s["render_ms_p99"], s["note_latency_ms"], s["cache_hits"],
                                       s["cache_misses"], s["device"], s["model"], s["standins"],
                                       s["callback_ms_max"], self.late])]

    def version(self, args, sender):
        return [("/wae/version.reply", ["waeserver", __version__])]

    # --- session -------------------------------------------------------------------------------
    def notify(self, args, sender):
        on = whole(args[0], "notify", 0, 1)
        port = whole(args[1], "port", 1, PORT_MAX) if len(args) > 1 else None
        if sender is None:
            return None
        if on:
            self.subscribers[sender] = (sender[0], port or sender[1])
            return [("/done", ["/wae/notify"])]
        self.subscribers.pop(sender, None)
        return None

    def sync(self, args, sender):
        token = whole(args[0], "sync id", -2**31, 2**31 - 1)
        self.inst.sync((self.reply_to(sender), token))
