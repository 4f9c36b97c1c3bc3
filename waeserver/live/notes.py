"""Notes made ready for the voices: the model's output resampled to the output rate, faded, looped
where it holds steady, and a pitch's velocity layers levelled to one loudness.

Each render gets a 1 ms fade-in and a 10 ms fade-out, so voices can start and end on it without a
click; a note that sustains gets a loop instead of its end (see :func:`shape_note`,
:func:`shape_layers`). :func:`synthesize_notes` is the one call from a bundle to such notes, used by
the render process and by the renderer when it runs the model itself; :func:`synthesize_in_two`
hands a priority render's notes over in two parts, their first ``HEAD_S`` as soon as they are
ready and the rest after (the voices start on the first part while the rest is made).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from waeserver.dsp.pitch import midi_to_f0
from waeserver.dsp.resample import to_rate
from waeserver.live.cache import Note
from waeserver.live.controls import MIDI_MAX
from waeserver.live.voices import MAX_LAYERS

FADE_IN_S = 0.001
FADE_OUT_S = 0.010
SILENCE = 1e-4       # trailing samples below this are cut, so voices end when the note has
VELOCITIES = (40, 80, 120)  # MIDI velocities of the layers when a card names none: the datasets' p, mf, ff
LAYER_GAIN_MAX = 16.0  # most a layer is raised to the level of its pitch's loudest (a near-silent one is not)
LOOP_S = (0.35, 0.75)  # inside the held part of every preset's notes (0.8 s and longer)
LOOP_XFADE_S = 0.08    # the loop's end is crossfaded into the frames before its start
STEADY = (0.8, 1.7)  # a note loops when its level at the loop's end over its level at the start is in here
LEVEL_S = 0.1        # the stretch over which those levels are measured
HEAD_S = 0.2         # a note's first part handed over ahead of the rest (synthesize_in_two)
HEAD_MARGIN = 1024   # model samples past the head synthesized and resampled with it, not handed over


def layer_velocities(bundle) -> tuple[int, ...]:
    """The MIDI velocities to render one velocity layer at for ``bundle``: those it was trained on
    (its card's ``attributes.velocities``; at most ``MAX_LAYERS``, spread over them), else
    ``VELOCITIES``; one layer when its decoder ignores velocity."""
    card = bundle.card
    if not (card.get("model") or {}).get("use_velocity", True):
        return (VELOCITIES[-1],)
    given = (card.get("attributes") or {}).get("velocities")
    try:
        found = sorted({int(v) for v in given if 1 <= int(v) <= MIDI_MAX and int(v) == v})
    except (TypeError, ValueError):
        found = []
    if not found:
        return VELOCITIES
    if len(found) > MAX_LAYERS:
        found = [found[int(i)] for i in np.linspace(0, len(found) - 1, MAX_LAYERS).round()]
    return tuple(found)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _drift(wave: np.ndarray, rate: int) -> float:
    """A note's RMS over the loop's last ``LEVEL_S`` over its RMS over the first (0: no loop fits)."""
    start, end, n_level = int(LOOP_S[0] * rate), int(LOOP_S[1] * rate), int(LEVEL_S * rate)
    first = _rms(wave[start:start + n_level])
    return _rms(wave[end - n_level:end]) / first if len(wave) >= end and first > SILENCE else 0.0


def shape_note(wave: np.ndarray, rate: int, loop: bool | None = None) -> Note:
    """One note ``[T]`` made ready for the voices: a new contiguous array with a 1 ms fade-in.

    A note that holds steady over ``LOOP_S`` (its RMS over the loop's last ``LEVEL_S`` within
    ``STEADY`` of its RMS over the first), or that ``loop`` says should loop, ends at the loop's end.
    Its loop is levelled (a gain
    ramp makes the end as loud as the start, so holding it does not pump) and the loop's last
    ``LOOP_XFADE_S`` are crossfaded into the frames just before the loop's start, so that going
    back to the start is seamless: it sounds for as long as it is held, and its release is the
    voice's envelope. The crossfade is linear, scaled by the two segments' correlation so that it
    keeps their level whether they are in phase (no swell) or not (no dip). Any other note
    (plucked, struck, decaying, short, or ``loop`` False) loses its trailing silence and gets a
    10 ms fade-out.
    """
    start, end = int(LOOP_S[0] * rate), int(LOOP_S[1] * rate)
    x = int(LOOP_XFADE_S * rate)
    drift = _drift(wave, rate)
    if (STEADY[0] <= drift <= STEADY[1] if loop is None else loop) and drift > 0.0:
        note = np.array(wave[:end], np.float32)
        note[start:] *= np.linspace(1.0, 1.0 / drift, end - start, dtype=np.float32)
        tail, lead = note[end - x:].astype(np.float64), wave[start - x:start].astype(np.float64)
        r = max(0.0, float(np.dot(tail, lead)) / max(np.linalg.norm(tail) * np.linalg.norm(lead), 1e-12))
        w = np.linspace(0.0, 1.0, x)
        gain = 1.0 / np.sqrt((1 - w) ** 2 + w ** 2 + 2 * r * w * (1 - w))
        note[end - x:] = (tail * (1 - w) + lead * w) * gain
        loop_at = start
    else:
        loud = np.flatnonzero(np.abs(wave) > SILENCE)
        last = int(loud[-1]) + 1 if len(loud) else 1
        fade_out = int(FADE_OUT_S * rate)
        note = np.array(wave[:min(len(wave), last + fade_out)], np.float32)
        n_out = min(len(note), fade_out)
        note[len(note) - n_out:] *= np.linspace(1.0, 0.0, n_out, dtype=np.float32)
        loop_at = -1
    return Note(_fade_in(note, rate), loop_at)


def _fade_in(note: np.ndarray, rate: int) -> np.ndarray:
    n_in = min(len(note), max(1, int(FADE_IN_S * rate)))
    note[:n_in] *= np.linspace(0.0, 1.0, n_in + 1, dtype=np.float32)[1:]
    return note


Levels = tuple[tuple[float, ...], bool]   # a pitch's layer gains and whether its layers loop


def shape_layers(waves: np.ndarray, rate: int, levels: Levels | None = None) -> tuple[tuple[Note, ...], Levels]:
    """The velocity layers ``[L,T]`` of one pitch, softest first, made ready for the voices; and
    their levels.

    Each layer is brought to the level of the loudest (RMS over the note's first ``LOOP_S[1]``;
    raised at most ``LAYER_GAIN_MAX``), so that the velocity curve alone sets a note's level and the
    layers only its timbre. They loop or not together, as most of them would on their own, so that
    a voice blending two of them holds or decays as one note. Some layers of a pitch alone (a
    priority render) take the gains and loop of ``levels``, those of the pitch's last whole render,
    one gain per layer given.
    """
    if levels is None:
        head = int(LOOP_S[1] * rate)
        rms = [_rms(w[:head]) for w in waves]
        top = max(rms)
        gains = tuple(min(top / level, LAYER_GAIN_MAX) if level > SILENCE and top > SILENCE else 1.0 for level in rms)
        steady = sum(STEADY[0] <= _drift(w, rate) <= STEADY[1] for w in waves)
        levels = gains, 2 * steady > len(waves)
    gains, loop = levels
    return tuple(shape_note(w * np.float32(g), rate, loop) for w, g in zip(waves, gains)), levels


def head_length(rate: int) -> int:
    """Samples at ``rate`` of a note's first part (see :func:`synthesize_in_two`)."""
    return int(HEAD_S * rate)


def _decode(bundle, pitches, velocities, styles, zs, layers):
    """The log-mels ``[N, M, F]`` and f0 ``[N]`` of every layer of ``pitches`` asked for, and how many
    layers each pitch has."""
    dev = bundle.device
    counts = [len(ls) for ls in layers]
    rows = lambda a: torch.from_numpy(np.repeat(a, counts, axis=0)).to(dev)  # noqa: E731  (each layer of a pitch)
    vel = [velocities[layer] for ls in layers for layer in ls]
    pitch = rows(np.asarray(pitches, np.int64))
    velocity = torch.tensor(vel, dtype=torch.float32, device=dev).div(MIDI_MAX)
    mel = bundle.decode_mel(pitch, velocity, rows(styles), rows(zs))
    return mel, midi_to_f0(pitch), counts


def _per_pitch(items, counts):
    starts = np.cumsum([0] + counts)
    return [items[a:b] for a, b in zip(starts[:-1], starts[1:])]


@torch.inference_mode()
def synthesize_notes(bundle, pitches: list[int], velocities, styles: np.ndarray, zs: np.ndarray,
                     rate: int, layers=None, levels=None) -> list[tuple[tuple[Note, ...], Levels]]:
    """Notes of ``bundle`` at ``rate`` Hz, shaped for the voices, one per MIDI velocity of
    ``velocities`` for each pitch (one batch): ``styles [B,S]``, ``zs [B,D]``; with ``layers``, only
    the layers (indices into ``velocities``) given for each pitch, levelled by its ``levels`` (see
    :func:`shape_layers`; None for a pitch rendered whole). Each pitch's notes and levels."""
    layers = [tuple(range(len(velocities)))] * len(pitches) if layers is None else [tuple(ls) for ls in layers]
    levels = [None] * len(pitches) if levels is None else levels
    mel, f0, counts = _decode(bundle, pitches, velocities, styles, zs, layers)
    wave = to_rate(bundle.inverter(mel, f0).float().cpu().numpy(), bundle.sample_rate, rate)
    return [shape_layers(w, rate, lv) for w, lv in zip(_per_pitch(wave, counts), levels)]


@torch.inference_mode()
def synthesize_in_two(bundle, pitches: list[int], velocities, styles: np.ndarray, zs: np.ndarray, rate: int,
                      layers, levels) -> tuple[list[tuple[np.ndarray, ...]] | None, Callable[[], list]]:
    """:func:`synthesize_notes` in two parts: the first :func:`head_length` samples of every note
    (``[head_length]`` arrays, per pitch a tuple of its layers'), then a call that makes the whole
    notes, :func:`synthesize_notes`' answer, which begin with those samples (to within the
    resampler's rounding and its truncation of the first part, ``HEAD_MARGIN`` model samples past
    its end: -80 dB of the note's peak). The first part is None, and the call makes everything,
    unless the inverter makes a note's first frames alone (the harmonic inverter) and every pitch
    has its ``levels`` (the gains of the first part)."""
    layers = [tuple(ls) for ls in layers]
    inverter = bundle.inverter
    if not hasattr(inverter, "prepare") or any(lv is None for lv in levels):
        return None, lambda: synthesize_notes(bundle, pitches, velocities, styles, zs, rate, layers, levels)
    mel, f0, counts = _decode(bundle, pitches, velocities, styles, zs, layers)
    prepared = inverter.prepare(mel, f0)
    frames = -(-(head_length(bundle.sample_rate) + HEAD_MARGIN) // inverter.cfg.hop_length)
    head = to_rate(inverter.waveform(prepared, frames).float().cpu().numpy(), bundle.sample_rate, rate)
    n = head_length(rate)
    heads = [tuple(_fade_in(w[:n] * np.float32(g), rate) for w, g in zip(waves, lv[0]))
             for waves, lv in zip(_per_pitch(head, counts), levels)]

    def rest() -> list[tuple[tuple[Note, ...], Levels]]:
        with torch.inference_mode():
            wave = to_rate(inverter.waveform(prepared).float().cpu().numpy(), bundle.sample_rate, rate)
        return [shape_layers(w, rate, lv) for w, lv in zip(_per_pitch(wave, counts), levels)]

    return heads, rest
