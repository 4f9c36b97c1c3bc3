"""MIDI in: raw messages to voice actions and control actions; hardware inputs through mido.

:class:`MidiIn` parses one channel message at a time (the JACK MIDI port hands it bytes on the
audio thread, mido inputs on their own threads). Notes, sustain, pitch bend, CC120 (all sound off)
and CC123 (all notes off) go straight to the voices (the pool itself on the audio thread, its
:class:`~waeserver.voices.Poster` elsewhere). Mapped CCs, MIDI learn and program changes are
appended to ``control`` as ``("cc", target, unit)``, ``("learn", cc, target)`` and ``("program", n)`` for
the control thread, since they touch the renderer's state and the preset files. Anything
malformed (a data byte above 127, a short message, a status byte out of place) is dropped.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CURVES = {"linear": 1.0, "soft": 0.5, "hard": 2.0}
SUSTAIN, ALL_SOUND_OFF, ALL_NOTES_OFF = 64, 120, 123


def curve_exponent(curve) -> float:
    """A velocity curve (``linear``, ``soft``, ``hard`` or an exponent 0.1..10) as its exponent."""
    if isinstance(curve, str) and curve in CURVES:
        return CURVES[curve]
    try:
        e = float(curve)
    except (TypeError, ValueError):
        raise ValueError(f"velocity curve must be linear, soft, hard or an exponent, got {curve!r}") from None
    if not 0.1 <= e <= 10.0:
        raise ValueError(f"velocity curve exponent {e:g} is out of range 0.1..10")
    return e


def velocity_gain(velocity: int, exponent: float) -> float:
    """MIDI velocity 1..127 to a gain 0..1: ``(velocity / 127) ** exponent``."""
    return (max(0, min(127, velocity)) / 127.0) ** exponent


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


class MidiIn:
    """Parses MIDI channel messages for ``voices`` (a VoicePool or its Poster)."""

    def __init__(self, voices, control: Callable[[tuple], None], settings: MidiSettings):
        self.voices = voices
        self.control = control
        self.settings = settings
        self.dropped = 0

    def handle(self, data, at: int = 0) -> None:
        """One MIDI message (bytes or a sequence of ints) at frame offset ``at``."""
        settings = self.settings
        if len(data) < 2 or not 0x80 <= data[0] < 0xF0:
            self.dropped += 1
            return
        status = data[0]
        kind = status & 0xF0
        need = 2 if kind in (0xC0, 0xD0) else 3
        if len(data) < need or any(b > 127 for b in data[1:need]):
            self.dropped += 1
            return
        if settings.channel and (status & 0x0F) != settings.channel - 1:
            return
        voices = self.voices
        if kind == 0x90 and data[2] > 0:
            voices.note_on(data[1], velocity_gain(data[2], settings.exponent), at)
        elif kind == 0x80 or kind == 0x90:
            voices.note_off(data[1], at)
        elif kind == 0xB0:
            cc, value = data[1], data[2]
            if cc == SUSTAIN:
                voices.sustain(value >= 64, at)
            elif cc == ALL_SOUND_OFF:
                voices.panic(at)
            elif cc == ALL_NOTES_OFF:
                voices.all_notes_off(at)
            elif settings.learn is not None:  # bind here, so the very next move already counts
                target, settings.learn = settings.learn, None
                settings.cc_map = {**settings.cc_map, cc: target}
                self.control(("learn", cc, target))
            elif cc in settings.cc_map:
                self.control(("cc", settings.cc_map[cc], value / 127.0))
        elif kind == 0xC0:
            self.control(("program", data[1]))
        elif kind == 0xE0:
            voices.bend((data[2] << 7 | data[1]) - 8192, at)


def open_inputs(patterns: list[str], midi: MidiIn) -> list:
    """Open every mido input whose name matches one of ``patterns`` (exact, glob or substring).

    Each port calls ``midi.handle`` from mido's thread. A pattern that matches nothing is
    reported and left out, so a missing controller never stops the daemon.
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
            ports.append(mido.open_input(name, callback=lambda msg: midi.handle(msg.bytes())))
            log.info("MIDI input: %s", name)
    return ports
