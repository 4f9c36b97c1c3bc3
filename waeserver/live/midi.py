"""MIDI in: the settings every input shares, the control messages, and hardware inputs through mido.

Notes, sustain, pitch bend, CC120 (all sound off) and CC123 (all notes off) are parsed by the C
voice pool itself (:mod:`waeserver.live.voices`), on the audio thread for the JACK MIDI port and at the
next period for mido inputs, so they act on the frame they were played. Every other controller and
program change is handed on, and :class:`MidiControls` turns it into ``("cc", target, unit)``,
``("learn", cc, target)`` or ``("program", n)`` for the control thread, since these touch the
renderer's state and the preset files. Anything malformed (a data byte above 127, a short message,
a status byte out of place) is counted as dropped by the pool.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from waeserver.live.controls import CURVE_MAX, CURVE_MIN, MIDI_MAX, in_range
from waeserver.live.voices import NotQueued

log = logging.getLogger(__name__)

CURVES = {"linear": 1.0, "soft": 0.5, "hard": 2.0}


def curve_exponent(curve) -> float:
    """A velocity curve (``linear``, ``soft``, ``hard`` or an exponent 0.1..10) as its exponent
    (:func:`waeserver.live.voices.velocity_gain` applies it)."""
    if isinstance(curve, str) and curve in CURVES:
        return CURVES[curve]
    try:
        e = float(curve)
    except (TypeError, ValueError):
        raise ValueError(f"velocity curve must be linear, soft, hard or an exponent, got {curve!r}") from None
    return in_range(e, "velocity curve exponent", CURVE_MIN, CURVE_MAX, ValueError)


@dataclass
class MidiSettings:
    """What every MIDI parser of one instrument shares. ``channel`` 0 takes every channel, 1..16
    only that one; ``cc_map`` maps controller numbers to control targets (``style:NAME``,
    ``gain``, ...); ``learn`` is the target the next moved controller gets bound to. ``cc_map`` is
    replaced whole, never edited in place, so any thread may read it."""

    channel: int = 0
    exponent: float = 1.0
    cc_map: dict[int, str] = field(default_factory=dict)
    learn: str | None = None


class MidiControls:
    """Turns the control messages the voice pool hands on into control actions for ``control``."""

    def __init__(self, control: Callable[[tuple], None], settings: MidiSettings):
        self.control = control
        self.settings = settings

    def handle(self, data: bytes) -> None:
        """One controller (``Bn cc value``) or program change (``Cn program``) message."""
        settings = self.settings
        kind = data[0] & 0xF0
        if kind == 0xB0 and len(data) == 3:
            cc, value = data[1], data[2]
            if settings.learn is not None:  # bind here, so the very next move already counts
                target, settings.learn = settings.learn, None
                settings.cc_map = {**settings.cc_map, cc: target}
                self.control(("learn", cc, target))
            elif cc in settings.cc_map:
                self.control(("cc", settings.cc_map[cc], value / MIDI_MAX))
        elif kind == 0xC0:
            self.control(("program", data[1]))


def open_inputs(patterns: list[str], pool) -> list:
    """Open every mido input whose name matches one of ``patterns`` (exact, glob or substring).

    Each port hands its channel messages to the voice ``pool`` (:meth:`VoicePool.midi`) from mido's
    thread. A pattern that matches nothing is reported and left out, so a missing controller never
    stops the daemon.
    """
    if not patterns:
        return []
    import mido

    try:
        names = mido.get_input_names()
    except Exception as exc:  # no MIDI backend on this machine
        log.warning("hardware MIDI inputs unavailable (%s)", str(exc).splitlines()[0] if str(exc) else exc)
        return []
    ports = []
    for pattern in patterns:
        matched = [n for n in names if n == pattern or fnmatch.fnmatch(n, pattern) or pattern in n]
        if not matched:
            log.warning("no MIDI input matches %r (inputs: %s)", pattern, ", ".join(names) or "none")
        for name in matched:
            ports.append(mido.open_input(name, callback=lambda msg: _play(pool, msg)))
            log.info("MIDI input: %s", name)
    return ports


def _play(pool, msg) -> None:
    try:
        pool.midi(msg.bytes())
    except NotQueued:
        pass   # counted in pool.lost, which the daemon logs
