"""Pitch: the facts every layer shares (note names, MIDI to Hz and back, pitch class and octave
classes) and fundamental-frequency estimation (YIN), independent of every model in the project.

YIN labels imported samples that carry no pitch, and checks that generated notes sound at the
pitch they were asked for.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

A4_HZ = 440.0           # concert pitch
A4_MIDI = 69
N_PITCH_CLASSES = 12
N_OCTAVES = 9           # octave classes 0..8: MIDI 12..23 is 0, C4 = 60 is 4 (the ends clipped)
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# A note name standing on its own in a file name: "C#4", "Eb2", "a4", "Fs3". Not preceded by a
# letter ("flute2" is no E2) nor followed by another digit.
_NOTE_IN_NAME = re.compile(r"(?<![A-Za-z])([A-Ga-g])(#|b|s)?(-1|[0-9])(?![0-9])")


def midi_to_hz(pitch):
    """MIDI pitch (fractional allowed) to Hz: a number, or an array or float tensor elementwise."""
    return A4_HZ * 2.0 ** ((pitch - A4_MIDI) / N_PITCH_CLASSES)


def midi_to_f0(pitch):
    """MIDI pitch tensor ``[B]`` (any dtype) to fundamental frequencies ``[B]`` float32 Hz."""
    return midi_to_hz(pitch.float())


def hz_to_midi(hz: float) -> float:
    return A4_MIDI + N_PITCH_CLASSES * math.log2(hz / A4_HZ)


def octaves_from_a4(f0):
    """``log2(f0 / 440)`` of a tensor of frequencies in Hz: 0 at A4, 1 per octave."""
    return (f0 / A4_HZ).log2()


def pitch_class(pitch):
    """Pitch class 0..11 (C is 0) of a MIDI pitch: an int, or an int array or tensor elementwise."""
    return pitch % N_PITCH_CLASSES


def octave_of(pitch):
    """Octave class 0..8 (MIDI 12..23 is 0, C4 = 60 is 4), the ends clipped: an int, or an int
    array or tensor elementwise."""
    octave = pitch // N_PITCH_CLASSES - 1
    return min(max(octave, 0), N_OCTAVES - 1) if isinstance(octave, int) else octave.clip(0, N_OCTAVES - 1)


def note_name(pitch: int) -> str:
    """``C4`` for 60: what :func:`pitch_from_name` reads back."""
    return f"{NOTE_NAMES[pitch_class(pitch)]}{pitch // N_PITCH_CLASSES - 1}"


def pitch_from_name(name: str) -> int | None:
    """MIDI pitch of the last note name in a file name (C4 = 60), or None."""
    found = None
    for match in _NOTE_IN_NAME.finditer(name):
        letter, accidental, octave = match.groups()
        pitch = (int(octave) + 1) * N_PITCH_CLASSES + _STEPS[letter.upper()]
        pitch += {"#": 1, "s": 1, "b": -1}.get(accidental or "", 0)
        if 0 <= pitch <= 127:
            found = pitch
    return found


@dataclass
class PitchEstimate:
    hz: float
    midi: float
    voiced_fraction: float  # of the loud frames, how many had a clear period
    aperiodicity: float  # median YIN dip of the voiced frames: 0 is perfectly periodic


def _cmnd(frame: np.ndarray, max_lag: int) -> np.ndarray:
    """YIN's cumulative mean normalised difference for lags 0..max_lag-1."""
    n = len(frame)
    spec = np.fft.rfft(frame, 2 * n)
    acf = np.fft.irfft(spec * np.conj(spec))[:max_lag]
    energy = np.cumsum(frame ** 2)
    total = energy[-1]
    # d(tau) = sum x_j^2 + sum x_{j+tau}^2 - 2 acf(tau), over the first n - tau samples
    window_energy = energy[n - 1 - np.arange(max_lag)]
    shifted = total - np.concatenate(([0.0], energy[: max_lag - 1]))
    diff = window_energy + shifted - 2 * acf
    diff[0] = 0.0
    cum = np.cumsum(diff[1:])
    out = np.ones(max_lag)
    out[1:] = diff[1:] * np.arange(1, max_lag) / np.maximum(cum, 1e-12)
    return out


def estimate_pitch(audio: np.ndarray, sample_rate: int, fmin: float = 25.0, fmax: float = 4200.0,
                   threshold: float = 0.2, frame: int = 4096, hop: int = 1024) -> PitchEstimate | None:
    """Median YIN f0 over the loud frames of a mono note; None when no clear pitch is found."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.size < frame or not np.isfinite(audio).all():
        return None
    min_lag = max(2, int(sample_rate / fmax))
    max_lag = min(frame // 2, int(sample_rate / fmin) + 2)
    starts = range(0, audio.size - frame + 1, hop)
    rms = np.array([np.sqrt(np.mean(audio[s:s + frame] ** 2)) for s in starts])
    if rms.max() <= 1e-6:
        return None
    loud = [s for s, r in zip(starts, rms) if r > rms.max() * 0.1]
    f0s, dips = [], []
    for s in loud:
        d = _cmnd(audio[s:s + frame], max_lag)
        below = np.nonzero(d[min_lag:] < threshold)[0]
        if below.size == 0:
            continue
        tau = below[0] + min_lag
        while tau + 1 < max_lag and d[tau + 1] < d[tau]:
            tau += 1
        # parabolic interpolation around the dip
        if 1 <= tau < max_lag - 1:
            a, b, c = d[tau - 1], d[tau], d[tau + 1]
            denom = a - 2 * b + c
            shift = 0.5 * (a - c) / denom if abs(denom) > 1e-12 else 0.0
        else:
            shift = 0.0
        f0s.append(sample_rate / (tau + shift))
        dips.append(d[tau])
    if not f0s or len(f0s) < 0.3 * len(loud):
        return None
    hz = float(np.median(f0s))
    return PitchEstimate(hz=hz, midi=hz_to_midi(hz), voiced_fraction=len(f0s) / len(loud),
                         aperiodicity=float(np.median(dips)))


def cents_off(hz: float, pitch: float) -> float:
    """Signed distance in cents of a frequency from a MIDI pitch."""
    return 1200 * math.log2(hz / midi_to_hz(pitch))
