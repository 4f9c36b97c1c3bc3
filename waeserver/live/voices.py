"""The voice pool: polyphony, envelopes, sustain, pitch bend and stealing, mixed from rendered notes.

The pool itself is C (``_voices.c``, built with the package): JACK calls it on its process thread
with no Python on the way, so no Python thread can delay the audio by holding the interpreter
lock. This module is its Python side: :class:`VoicePool` queues actions, publishes renders and
reads back what happened; the offline renderer and the tests run periods through the same C code
with :meth:`VoicePool.run`.

A period: queued actions and newly published renders apply at its start, then the period's events
(MIDI, or any action in tests and offline) at their frame offsets, each voice mixed lazily up to
the frame of an event that changes it, then every voice to the end (so a 32-note chord spread over
32 frames costs a mix per voice plus one per event), then the master gain (a change ramps over
``GAIN_RAMP_S`` from its frame) and the limiter (a gain with instant attack and no look-ahead,
exactly 1 below its knee: docs/live.md). Mixing reads
renders as they are and never waits for the renderer.

Policies (the C code follows them; docs/live.md explains them):

- *Stealing*, when ``polyphony`` voices sound: a free slot, else the oldest released voice, else
  the oldest voice of the same pitch, else the oldest voice. The stolen voice fades out over
  5 ms (``FADE_S`` in ``_voices.c``) in one of the extra tail slots while the new note starts at once.
- *Stale notes*: a note-on whose layers (those it blends) are not all fresh asks the renderer for
  them at once. If a priority render is expected within the latency budget (less the period the
  output takes anyway), the voice waits for it that long at most; else, or when the budget runs
  out, the most recent renders of the pitch play as a stand-in and are crossfaded (10 ms) to the
  new ones once every layer it blends has arrived or is fresh.
- *Loops*: a render with a loop start (:class:`~waeserver.live.cache.Note`) goes back to it whenever a
  voice reaches its end, so a held note sounds until its envelope ends it.
- *Velocity layers* (:meth:`VoicePool.set_layers`): each pitch has a render per layer; a note
  blends the two layers around its MIDI velocity, linearly (on a layer, or beyond the outer ones,
  one layer alone). The layer gives the timbre; the gain (the velocity curve's) the level.

Renders are arrays owned here: a published note gets a slot in the C pool, which hands the slot
back (an event) once no voice and no pitch uses it; only then is the array let go.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from waeserver.dsp.native import load_library
from waeserver.live.controls import MIDI_MAX

N_PITCHES = 128
MAX_LAYERS = 8
MAX_SLOTS = 4096
LATENCY_SLOTS = 256
TIMED_PERIODS = 4096

FREE, PENDING, PLAYING, RELEASED, FADING = range(5)
(NOTE_ON, NOTE_OFF, SUSTAIN, BEND, PANIC, ALL_OFF, SYNC, PUBLISH, CLEAR, MIDI, LAYERS, RECORD, GAIN, RELEASE,
 BEND_RANGE, TIMBRE, EXTEND) = range(1, 18)
CONTROLS = {"gain": GAIN, "release": RELEASE, "bend_range": BEND_RANGE}   # the pool's own controls: their commands
GAIN_RAMP_S = 0.001   # a master gain change ramps over this long from its frame (as in _voices.c)
E_GO, E_END, E_SYNCED, E_FREED, E_CONTROL = range(1, 6)
R_RENDER, R_TAKEN = 1, 2


def velocity_gain(velocity: int, exponent: float) -> float:
    """MIDI velocity 0..127 to a gain 0..1 through the velocity curve ``(velocity / 127) ** exponent``:
    OSC notes are given it, MIDI notes take it from the pool's table (:meth:`VoicePool.set_velocity_curve`)."""
    return (max(0, min(MIDI_MAX, velocity)) / MIDI_MAX) ** exponent


class NotQueued(RuntimeError):
    """An action the pool did not take: its queue is full, or it refuses notes (no audio running)."""


class Params(ctypes.Structure):
    """Settings Python may write at any time; the audio thread reads them as it needs them.
    ``control``: gain, release and bend range set untimed, each taken at the start of the period
    after its count in ``changes`` moved; ``generation``: the cache's latest (see :meth:`VoicePool.timbre`)."""

    _fields_ = [("control", ctypes.c_double * 3), ("budget_ms", ctypes.c_double), ("expected_ms", ctypes.c_double),
                ("per_note", ctypes.c_int32), ("channel", ctypes.c_int32), ("low", ctypes.c_int32),
                ("high", ctypes.c_int32), ("wake_fd", ctypes.c_int32), ("generation", ctypes.c_int32),
                ("changes", ctypes.c_uint32 * 3), ("pad", ctypes.c_uint32), ("velocity", ctypes.c_float * 128),
                ("layer_velocity", ctypes.c_float * MAX_LAYERS)]


class Stats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in
                ("hits", "misses", "standins", "out_of_range", "dropped", "overflow", "mixes", "frame", "calls",
                 "n_latency", "notes", "limited", "timed_late", "timed_overflow")] + [
        ("latency", ctypes.c_int64 * LATENCY_SLOTS), ("took_ns", ctypes.c_int64 * TIMED_PERIODS)]


class Pair(ctypes.Structure):
    """The render slots of the two velocity layers a voice blends (``b`` -1: one layer only)."""

    _fields_ = [("a", ctypes.c_int32), ("b", ctypes.c_int32)]


class Voice(ctypes.Structure):
    """One voice as the C pool keeps it (read live: a snapshot needs a copy). ``pos`` counts frames
    into the note (a loop does not wind it back); ``blend`` is the weight of layer ``layer + 1``;
    ``need`` has a bit for each layer it blends (every layer in per-note z mode); ``gen`` is the
    render generation it plays (:meth:`VoicePool.timbre`)."""

    _fields_ = [(name, ctypes.c_int32) for name in
                ("state", "pitch", "held", "sustained", "waiting", "layer", "xfade", "done", "need", "gen")] + \
               [(name, Pair) for name in ("slot", "old", "standin")] + \
               [(name, ctypes.c_double) for name in ("pos", "level", "slope", "gain", "blend")] + \
               [(name, ctypes.c_int64) for name in ("age", "released_at", "on_frame", "wait", "hold")]


class Command(ctypes.Structure):
    """A voice action; ``when``: the pool frame it applies at (held until then), -1 the next period."""

    _fields_ = [(name, ctypes.c_int32) for name in ("kind", "at", "a", "b", "c", "d")] + \
               [("x", ctypes.c_int64), ("y", ctypes.c_int64), ("f", ctypes.c_double), ("when", ctypes.c_int64)]


class Event(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int32), ("a", ctypes.c_int32), ("b", ctypes.c_int32), ("c", ctypes.c_int32)]


class Request(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in ("kind", "pitch", "layers", "pad")]


def _load() -> ctypes.CDLL:
    p, i32, i64, dbl = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_double
    lib = load_library("waeserver.live._voices", "C voice pool", [
        ("voices_new", p, [ctypes.c_int, ctypes.c_int, ctypes.c_int]), ("voices_free", None, [p]),
        ("voices_params", ctypes.POINTER(Params), [p]), ("voices_stats", ctypes.POINTER(Stats), [p]),
        ("voices_voices", p, [p]), ("voices_fresh", p, [p]), ("voices_played", p, [p]), ("voices_current", p, [p]),
        ("voices_ratio", dbl, [p]), ("voices_sustain_on", ctypes.c_int, [p]),
        ("voices_sizes", ctypes.c_int, [ctypes.c_int]),
        ("voices_set_rate", None, [p, ctypes.c_int]),
        ("voices_command", ctypes.c_int, [p, i32, i32, i32, i32, i32, i32, i64, i64, dbl, i64]),
        ("voices_held", ctypes.c_int, [p]), ("voices_anchor", ctypes.c_int, [p, p, p, p, p]),
        ("voices_queued", ctypes.c_int, [p, p, ctypes.c_int]), ("voices_events", ctypes.c_int, [p, p, ctypes.c_int]),
        ("voices_requests", ctypes.c_int, [p, p, ctypes.c_int]), ("voices_has_requests", ctypes.c_int, [p]),
        ("voices_process", None, [p, p, ctypes.c_int, p, ctypes.c_int]),
        ("voices_attach_jack", ctypes.c_int, [p, p, p, p, p, p]), ("voices_thread_mode", ctypes.c_int, [p]),
        ("voices_capture", None, [p, p, ctypes.c_int]), ("voices_take", i64, [p, p, p, p, p]),
    ])
    for i, (name, size) in enumerate([(s.__name__, ctypes.sizeof(s)) for s in (Params, Stats, Voice, Command)]
                                     + [("N_PITCHES", N_PITCHES), ("MAX_SLOTS", MAX_SLOTS),
                                        ("MAX_LAYERS", MAX_LAYERS)]):
        if lib.voices_sizes(i) != size:
            raise ImportError(f"waeserver's C voice pool does not match voices.py ({name}): rebuild it")
    return lib


_lib = _load()

ACTIONS = {"note_on": NOTE_ON, "note_off": NOTE_OFF, "sustain": SUSTAIN, "bend": BEND, "panic": PANIC,
           "all_notes_off": ALL_OFF, "midi": MIDI}
ACTION_NAMES = {kind: name for name, kind in ACTIONS.items()}


DEFAULT_VELOCITY = 100   # the timbre of a note-on given without a velocity (as /wae/note's default)


def _command(action: str, args: tuple, at: int = 0) -> tuple:
    """``(kind, at, a, b, c, d, x, y, f)`` of one voice action (see the actions of :class:`VoicePool`)."""
    kind = ACTIONS[action]
    if kind == NOTE_ON:
        pitch, gain, hold, velocity = (*args, *(-1, DEFAULT_VELOCITY)[len(args) - 2:])
        return kind, at, int(pitch), 0, int(velocity), 0, int(hold), 0, float(gain)
    if kind == MIDI:
        data = bytes(args[0])
        return kind, at, data[0] if data else 0, data[1] if len(data) > 1 else 0, 0, 0, \
            data[2] if len(data) > 2 else 0, len(data) if len(data) <= 3 else 0, 0.0
    return kind, at, int(args[0]) if args else 0, 0, 0, 0, 0, 0, 0.0


class VoicePool:
    """``polyphony`` voices (plus as many tail slots for fading stolen voices) at ``rate`` Hz.

    ``cache`` (a :class:`~waeserver.live.cache.RenderCache`) publishes its renders into the pool;
    ``budget_ms`` is the latency budget of a note whose render is not fresh. After :meth:`poll`,
    ``events`` holds ``("n_go", pitch)``, ``("n_end", pitch)`` and ``("synced", token)`` for the
    notification thread, and MIDI control messages (CCs other than sustain and the all-offs, program
    changes) went to ``on_control(bytes)``.

    The actions (``note_on``, ``note_off``, ``sustain``, ``bend``, ``panic``, ``all_notes_off``,
    ``midi``) and :meth:`sync` may be called from any thread; they take effect at the start of the
    next period, or, posted inside :meth:`at`, on a given frame; so do the controls ``gain``,
    ``release`` and ``bend_range`` (set as attributes) and a new render generation (:meth:`timbre`).
    """

    def __init__(self, rate: int, cache=None, polyphony: int = 32, budget_ms: float = 10.0, max_period: int = 8192):
        self._p = _lib.voices_new(int(rate), int(polyphony), int(max_period))
        if not self._p:
            raise MemoryError("cannot allocate the voice pool")
        self.polyphony = int(polyphony)
        self.rate = int(rate)
        self.params = _lib.voices_params(self._p).contents
        self.stats = _lib.voices_stats(self._p).contents
        self.voices = (Voice * (2 * self.polyphony)).from_address(_lib.voices_voices(self._p))
        # a bit per velocity layer whose render is fresh
        self.fresh = np.ctypeslib.as_array((ctypes.c_uint8 * N_PITCHES).from_address(_lib.voices_fresh(self._p)))
        self.played = np.ctypeslib.as_array((ctypes.c_int64 * N_PITCHES).from_address(_lib.voices_played(self._p)))
        self.current = np.ctypeslib.as_array(((ctypes.c_int32 * MAX_LAYERS) * N_PITCHES).from_address(
            _lib.voices_current(self._p)))   # [pitch, layer]
        self.params.budget_ms = float(budget_ms)
        self.events: deque[tuple] = deque(maxlen=8192)
        self.on_control: Callable[[bytes], None] = lambda data: None
        self._lock = threading.Lock()           # producers of commands (Python threads only)
        self._polling = threading.Lock()        # consumers of events
        self._notes: dict[int, object] = {}     # slot -> the Note it holds (keeps the array alive)
        self._free = list(range(MAX_SLOTS - 1, -1, -1))
        self._tokens: dict[int, object] = {}
        self._next_token = 0
        self._event_buf = (Event * 4096)()
        self._request_buf = (Request * 1024)()
        self._queued_buf = (Command * 8192)()
        self._when = threading.local()          # the frame of actions posted inside at()
        self._jack = None                       # the client whose process callback we are
        self.refusing = ""                      # why note-ons are refused now ("": they are not)
        self._controls = {name: self.params.control[kind - GAIN] for name, kind in CONTROLS.items()}
        self.generation = 0                     # the latest render generation (timbre)
        self.lost = 0                           # actions not taken (NotQueued), ever
        self.lost_why = ""                      # why the last one was not
        self.cache = None
        if cache is not None:
            cache.attach(self)

    def __del__(self):
        if getattr(self, "_p", None) and self._jack is None:   # JACK may still call a pool it was given
            _lib.voices_free(self._p)
            self._p = None

    # --- settings -----------------------------------------------------------------------------
    gain = property(lambda self: self._controls["gain"], lambda self, v: self._set_control("gain", v))
    release = property(lambda self: self._controls["release"], lambda self, v: self._set_control("release", v))
    bend_range = property(lambda self: self._controls["bend_range"],
                          lambda self, v: self._set_control("bend_range", v))
    budget_ms = property(lambda self: self.params.budget_ms,
                         lambda self, v: setattr(self.params, "budget_ms", float(v)))

    def _set_control(self, name: str, value: float) -> None:
        """The master ``gain``, ``release`` (seconds) or ``bend_range`` (semitones) from the start of
        the next period, or, set inside :meth:`at`, from that frame: the gain ramps to its new value
        over ``GAIN_RAMP_S`` from it, a release applies to voices released from it on, a bend range to
        bends from it on. The value read back is the latest set, whether it is in force yet or not."""
        value, kind = float(value), CONTROLS[name]
        with self._lock:
            frame = self._frame()
            if frame >= 0:
                if not _lib.voices_command(self._p, kind, 0, 0, 0, 0, 0, 0, 0, value, frame):
                    self._refuse(f"the voice pool's queue is full: {name} dropped")
            else:   # a field and a count, not a command: a knob's stream of them never fills the queue
                self.params.control[kind - GAIN] = value
                self.params.changes[kind - GAIN] += 1
            self._controls[name] = value

    def timbre(self) -> int:
        """A new render generation, for a new control target (:meth:`RenderCache.set_target
        <waeserver.live.cache.RenderCache.set_target>`); its number. Notes take the renders published
        with it (:meth:`publish`) from the next period on, or, inside :meth:`at`, from that frame on; a
        note before plays the renders published before (the latest of each pitch and layer is kept
        beside the new one until then), as fresh. If the queue is full the generation stays as it
        is, and its renders are played as soon as they are in (the way of untimed changes)."""
        with self._lock:
            self.params.generation = self.generation + 1   # before the cache makes its renders stale
            if _lib.voices_command(self._p, TIMBRE, 0, self.generation + 1, 0, 0, 0, 0, 0, 0.0, self._frame()):
                self.generation += 1
            else:
                self.params.generation = self.generation
                self.lost += 1
                self.lost_why = "the voice pool's queue is full: a timbre change applies at once"
            return self.generation

    def set_velocity_curve(self, exponent: float) -> None:
        """The gain of each MIDI velocity for the notes the pool parses itself (:func:`velocity_gain`)."""
        for v in range(MIDI_MAX + 1):
            self.params.velocity[v] = velocity_gain(v, exponent)

    def set_channel(self, channel: int) -> None:
        """Take MIDI notes from ``channel`` 1..16 only, or from every channel (0)."""
        self.params.channel = int(channel)

    def set_rate(self, rate: int) -> None:
        """A new output rate (fade lengths follow); only while JACK is not calling the pool."""
        self.rate = int(rate)
        _lib.voices_set_rate(self._p, self.rate)

    # --- queries -----------------------------------------------------------------------------
    @property
    def ratio(self) -> float:
        """Playback speed from pitch bend."""
        return _lib.voices_ratio(self._p)

    @property
    def sustain_on(self) -> bool:
        return bool(_lib.voices_sustain_on(self._p))

    hits = property(lambda self: self.stats.hits)
    misses = property(lambda self: self.stats.misses)
    standins = property(lambda self: self.stats.standins)
    dropped = property(lambda self: self.stats.dropped)

    def sounding(self) -> int:
        return sum(1 for v in self.voices if v.state != FREE)

    def audio(self, voice: Voice, which: str = "slot", layer: str = "a"):
        """The render array a voice plays (``which``: ``slot``, ``old`` for a crossfade's, ``standin``;
        ``layer``: ``a``, or ``b`` for the layer above, which it blends in), or None."""
        note = self._notes.get(getattr(getattr(voice, which), layer))
        return None if note is None else note.wave

    def latency_ms(self) -> tuple[float, float]:
        """p50 and p99 of recent note-on to sound delays inside the engine (ms)."""
        n = min(self.stats.n_latency, LATENCY_SLOTS)
        if n == 0:
            return 0.0, 0.0
        p50, p99 = np.percentile(np.ctypeslib.as_array(self.stats.latency)[:n], [50, 99]) * 1000.0 / self.rate
        return float(p50), float(p99)

    def jack_thread(self) -> str:
        """How JACK's process thread runs: ``realtime``, ``nice -10, short slice`` (JACK not
        realtime, raised, on Linux 6.12 or later; ``JACK_THREAD_SLICE_NS`` in ``_voices.c``), ``nice -10``
        (the same on an older kernel), ``ordinary`` (JACK not realtime, raising not allowed), or ``not started``."""
        return ("not started", "realtime", "nice -10", "ordinary",
                "nice -10, short slice")[_lib.voices_thread_mode(self._p)]

    def callback_ms(self) -> float:
        """The longest JACK process callback over recent periods (ms)."""
        n = min(self.stats.calls, TIMED_PERIODS)
        return float(np.ctypeslib.as_array(self.stats.took_ns)[:n].max()) / 1e6 if n else 0.0

    def queued(self) -> list[tuple[str, int]]:
        """``(action, first argument)`` of the voice actions queued for the next period (renders
        published and sync tokens left out)."""
        buf = self._queued_buf
        with self._lock:   # the producers' side of the ring
            n = _lib.voices_queued(self._p, buf, len(buf))
            return [(ACTION_NAMES[c.kind], c.a) for c in buf[:n] if c.kind in ACTION_NAMES]

    # --- actions (any thread) ----------------------------------------------------------------
    def _post(self, action: str, *args) -> None:
        command = kind, _, status, _, _, _, velocity, _, _ = _command(action, args)
        # Without audio a note-on would wait in the queue and sound whenever audio came back.
        if self.refusing and (kind == NOTE_ON or kind == MIDI and status & 0xF0 == 0x90 and velocity > 0):
            self._refuse(self.refusing)
        with self._lock:
            if not _lib.voices_command(self._p, *command, self._frame()):
                self._refuse("the voice pool's queue is full: action dropped")

    def _frame(self) -> int:
        return getattr(self._when, "frame", -1)

    @contextlib.contextmanager
    def at(self, frame: int):
        """Actions posted by this thread inside the block apply on pool frame ``frame`` (counted as
        :attr:`Stats.frame`; see :meth:`anchor`): held in the C pool until the
        period that holds it, then applied at its offset, in the order posted."""
        self._when.frame = int(frame)
        try:
            yield
        finally:
            self._when.frame = -1

    def held(self) -> int:
        """Actions held in the C pool for a later frame."""
        return _lib.voices_held(self._p)

    def anchor(self) -> tuple[int, int, float, int] | None:
        """The clock of the latest JACK period: ``(frame, ns, period_ns, frames)``: its first pool
        frame, the ``time.monotonic_ns()`` JACK's DLL puts that frame at, the DLL's period estimate
        and the period's frames; None before JACK has run a period (see ``waeserver.live.timing``)."""
        frame, ns, period, n = ctypes.c_int64(), ctypes.c_int64(), ctypes.c_double(), ctypes.c_int32()
        if not _lib.voices_anchor(self._p, ctypes.byref(frame), ctypes.byref(ns), ctypes.byref(period),
                                  ctypes.byref(n)) or period.value <= 0:
            return None
        return frame.value, ns.value, period.value, n.value

    def _refuse(self, why: str):
        self.lost += 1
        self.lost_why = why
        raise NotQueued(why)

    def note_on(self, pitch: int, gain: float, hold: int = -1, velocity: int = DEFAULT_VELOCITY) -> None:
        """``pitch`` at ``gain`` (0..1, after the velocity curve) for ``hold`` frames, -1 until off,
        with the timbre of MIDI ``velocity`` 1..127 (the velocity layers around it, :meth:`set_layers`)."""
        self._post("note_on", pitch, gain, hold, velocity)

    def note_off(self, pitch: int) -> None:
        self._post("note_off", pitch)

    def sustain(self, on: bool) -> None:
        self._post("sustain", bool(on))

    def bend(self, value: int) -> None:
        """14-bit pitch bend, centred on 0 (-8192..8191), over ``bend_range`` semitones."""
        self._post("bend", value)

    def panic(self) -> None:
        """Every voice off with a short fade; pedal up and bend centred."""
        self._post("panic")

    def all_notes_off(self) -> None:
        """Release every note, sustained ones too."""
        self._post("all_notes_off")

    def midi(self, data: bytes) -> None:
        """One raw MIDI channel message from another input (mido), parsed as JACK's are."""
        self._post("midi", data)

    def sync(self, token) -> None:
        """``("synced", token)`` in :attr:`events` once every action before it has been applied."""
        with self._lock:
            self._next_token += 1
            self._tokens[self._next_token] = token
            if not _lib.voices_command(self._p, SYNC, 0, self._next_token, 0, 0, 0, 0, 0, 0.0, self._frame()):
                del self._tokens[self._next_token]
                self._refuse("the voice pool's queue is full: sync dropped")

    # --- renders (the cache's thread) ---------------------------------------------------------
    def set_layers(self, velocities) -> None:
        """Renders come in one velocity layer per MIDI velocity of ``velocities`` (ascending, at most
        ``MAX_LAYERS``) from the next period; a note blends the two layers around its velocity.
        Renders of layers beyond are let go."""
        velocities = [float(v) for v in velocities]
        if not 1 <= len(velocities) <= MAX_LAYERS or velocities != sorted(set(velocities)):
            raise ValueError(f"1 to {MAX_LAYERS} ascending velocities, got {velocities}")
        with self._lock:
            for i, v in enumerate(velocities):
                self.params.layer_velocity[i] = v
            if not _lib.voices_command(self._p, LAYERS, 0, len(velocities), 0, 0, 0, 0, 0, 0.0, -1):
                self._refuse("the voice pool's queue is full: layers dropped")

    def publish(self, pitch: int, notes, layers=None, generation: int | None = None) -> bool:
        """Make ``notes`` (one :class:`~waeserver.live.cache.Note` per velocity layer, or one Note: layer 0;
        with ``layers``, the layer of each note), rendered for ``generation`` (:meth:`timbre`; None: the
        latest), the renders of ``pitch`` from the next period; voices waiting for them take them once
        the last is in (and every layer they blend is new or fresh). None stands for a layer not
        rendered. False when not all of them could be queued."""
        notes = [notes] if hasattr(notes, "wave") else list(notes)
        layers = list(range(len(notes))) if layers is None else list(layers)
        given = [(layer, note) for layer, note in zip(layers, notes) if note is not None]
        for _, note in given:
            wave = note.wave
            if wave.dtype != np.float32 or not wave.flags.c_contiguous or len(wave) < 1:
                raise ValueError("a render must be a non-empty contiguous float32 array")
        with self._lock:
            generation = self.generation if generation is None else int(generation)
            if len(self._free) < len(given):
                self.poll()
            if len(self._free) < len(given):
                return False
            for i, (layer, note) in enumerate(given):
                slot = self._free.pop()
                self._notes[slot] = note
                last = int(i == len(given) - 1) | generation << 1   # as the C pool takes it
                if not _lib.voices_command(self._p, PUBLISH, 0, int(pitch), slot, int(layer), last,
                                           note.wave.ctypes.data, len(note.wave), float(note.loop), -1):
                    del self._notes[slot]
                    self._free.append(slot)
                    return False
            return True

    def extend(self, head, whole) -> bool:
        """Let the voices play on into ``whole``, a :class:`~waeserver.live.cache.Note` over the same
        array as ``head``, a published render's first part (a priority render's head): its slot takes
        the whole length and loop from the next period, so a voice playing it goes on seamlessly.
        False when no slot holds ``head`` any more (every voice let it go) or the queue is full."""
        if head.wave.ctypes.data != whole.wave.ctypes.data:
            raise ValueError("a render grows only in its own array")
        with self._lock:
            slot = next((s for s, note in self._notes.items() if note is head), None)
            if slot is None:
                return False
            if not _lib.voices_command(self._p, EXTEND, 0, slot, 0, 0, 0, whole.wave.ctypes.data, len(whole.wave),
                                       float(whole.loop), -1):
                return False
            self._notes[slot] = whole
            return True

    def clear(self) -> None:
        """Forget every pitch's render (voices keep what they play). Rare and never urgent, so a
        full queue is given half a second of periods to make room."""
        deadline = time.monotonic() + 0.5
        while True:
            with self._lock:
                if _lib.voices_command(self._p, CLEAR, 0, 0, 0, 0, 0, 0, 0, 0.0, -1):
                    return
            if time.monotonic() > deadline:
                raise NotQueued("the voice pool's queue is full: clear dropped")
            time.sleep(0.005)

    def has_requests(self) -> bool:
        return bool(_lib.voices_has_requests(self._p))

    def requests(self) -> list[tuple[int, int, int]]:
        """``(kind, pitch, layers)`` the audio thread asked of the renderer: ``R_RENDER`` a pitch's
        ``layers`` (a bit per velocity layer: those a note blends) now, ``R_TAKEN`` a per-note draw used
        up. One consumer (the renderer's thread)."""
        n = _lib.voices_requests(self._p, self._request_buf, len(self._request_buf))
        return [(r.kind, r.pitch, r.layers) for r in self._request_buf[:n]]

    # --- events (the control thread) ---------------------------------------------------------
    def poll(self) -> None:
        """Collect what the audio thread reported: events, slots it let go, MIDI controls."""
        with self._polling:
            while True:
                n = _lib.voices_events(self._p, self._event_buf, len(self._event_buf))
                for e in self._event_buf[:n]:
                    if e.kind == E_GO:
                        self.events.append(("n_go", e.a))
                    elif e.kind == E_END:
                        self.events.append(("n_end", e.a))
                    elif e.kind == E_FREED:
                        self._notes.pop(e.a, None)
                        self._free.append(e.a)
                    elif e.kind == E_SYNCED:
                        self.events.append(("synced", self._tokens.pop(e.a, None)))
                    elif e.kind == E_CONTROL:
                        self.on_control(bytes((e.a, e.b, e.c)) if e.a & 0xF0 == 0xB0 else bytes((e.a, e.b)))
                if n < len(self._event_buf):
                    return

    # --- periods (offline clock, tests) -------------------------------------------------------
    def run(self, out: np.ndarray, events=()) -> None:
        """One period into ``out`` (float32), with ``(offset, action, args)`` events at their frames
        (actions as above; ``("midi", (bytes,))`` for raw MIDI), then :meth:`poll`."""
        self.process(out, self.prepare(events))
        self.poll()

    @staticmethod
    def prepare(events) -> ctypes.Array:
        """``(offset, action, args)`` events as the C pool takes them (see :meth:`process`)."""
        cmds = (Command * len(events))()
        for c, (offset, action, args) in zip(cmds, events):
            (c.kind, c.at, c.a, c.b, c.c, c.d, c.x, c.y, c.f) = _command(action, tuple(args), int(offset))
        return cmds

    def process(self, out: np.ndarray, cmds: ctypes.Array) -> None:
        """Just the C pool's period, as JACK calls it (no :meth:`poll`)."""
        if out.dtype != np.float32 or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be a writeable contiguous float32 array")
        _lib.voices_process(self._p, out.ctypes.data, len(out), cmds, len(cmds))

    # --- takes (live sampling: waeserver.live.sampling) -------------------------------------------
    def record(self, take: np.ndarray | None, take_id: int) -> None:
        """From the next period, JACK copies in_1 into ``take`` (float32, as many frames as it holds)
        as take ``take_id`` (> 0); None stops any take. The caller keeps ``take`` alive until
        :meth:`take` counts it full, or another take has replaced it."""
        if take is not None and (take.dtype != np.float32 or not take.flags.c_contiguous or len(take) < 1):
            raise ValueError("a take must be a non-empty contiguous float32 array")
        pointer, frames = (0, 0) if take is None else (take.ctypes.data, len(take))
        with self._lock:
            if not _lib.voices_command(self._p, RECORD, 0, int(take_id), 0, 0, 0, pointer, frames, 0.0, -1):
                self._refuse("the voice pool's queue is full: take dropped")

    def take(self) -> tuple[int, int, int, int, int]:
        """``(id, frames, first frame, start ns, done ns)`` of the latest take armed: its id (0 none
        yet), the frames captured so far, its first pool frame, and the ``time.monotonic_ns()`` of the
        periods that began and completed it (once it is complete)."""
        take_id, first, start, done = ctypes.c_int32(), ctypes.c_int64(), ctypes.c_int64(), ctypes.c_int64()
        got = _lib.voices_take(self._p, *map(ctypes.byref, (take_id, first, start, done)))
        return take_id.value, int(got), first.value, start.value, done.value

    def capture(self, frames: np.ndarray) -> None:
        """``frames`` (float32) into the armed take, as JACK's in_1 after a period (tests, offline)."""
        frames = np.ascontiguousarray(frames, np.float32)
        _lib.voices_capture(self._p, frames.ctypes.data, len(frames))

    # --- JACK ----------------------------------------------------------------------------------
    def attach_jack(self, client, out_1, out_2, midi_in, in_1) -> None:
        """Be the process callback of a JACK-Client ``client`` (before it is activated)."""
        import jack

        address = lambda obj: int(jack._ffi.cast("uintptr_t", obj._ptr))  # noqa: E731
        rc = _lib.voices_attach_jack(self._p, address(client), address(out_1), address(out_2), address(midi_in),
                                     address(in_1))
        if rc != 0:
            raise OSError(f"cannot set the JACK process callback ({rc})")
        self._jack = client
