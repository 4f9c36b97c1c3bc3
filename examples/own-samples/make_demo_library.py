"""Write a small library of synthetic samples in two timbres, to try docs/tutorial-own-samples.md with.

    python examples/own-samples/make_demo_library.py demo-library

writes, under the folder given (default ``demo-library``)::

    bowed/long_E3.wav ... long_G4.wav     a bright, sustained tone (harmonics falling as 1/k, slow
                                          attack, vibrato); 44.1 kHz stereo, the note in the file name
    plucked/pluck-01.flac ... -16.flac    a dark, decaying tone (harmonics falling as 1/k^2, each
                                          dying faster than the one below); 22.05 kHz mono, no note in
                                          the name: the importer estimates the pitch, except where
                                          tags.yaml gives it; the even ones are soft (-12 dB, darker)

Sixteen pitches each, E3 to G4, every semitone: the model learns each pitch class from the notes
that have it (see the tutorial). ``tests/integration/test_own_library.py`` builds and plays
a model from this library with the tutorial's own tags.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from waeserver.dsp.pitch import midi_to_hz, note_name

PITCHES = list(range(52, 68))             # E3 .. G4
SECONDS = 1.6


def bowed(pitch: int, rate: int) -> np.ndarray:
    """A sawtooth-like tone with a bow's slow attack and a 5 Hz vibrato; (frames, 2) float32."""
    t = np.arange(int(SECONDS * rate)) / rate
    f0 = midi_to_hz(pitch)
    phase = 2 * np.pi * f0 * (t + 0.004 / (2 * np.pi * 5) * (1 - np.cos(2 * np.pi * 5 * t)))
    wave = sum(np.sin(k * phase) / k for k in range(1, int(0.45 * rate / f0) + 1))
    envelope = np.minimum(1, t / 0.12) * np.minimum(1, (SECONDS - t) / 0.1)
    mono = (0.25 * wave * envelope).astype(np.float32)
    return np.stack([mono, 0.8 * mono], axis=1)


def plucked(pitch: int, rate: int, soft: bool) -> np.ndarray:
    """A few dark harmonics, each decaying faster than the one below; (frames,) float32."""
    t = np.arange(int(SECONDS * rate)) / rate
    f0 = midi_to_hz(pitch)
    tilt = 3.0 if soft else 2.0
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k ** tilt * np.exp(-t * (2 + 1.5 * k))
               for k in range(1, min(12, int(0.45 * rate / f0)) + 1))
    gain = 0.25 if soft else 1.0
    return (0.6 * gain * wave * np.minimum(1, t / 0.002)).astype(np.float32)


def make_library(folder: Path) -> Path:
    """Write the library into ``folder`` (created); returns it."""
    folder = Path(folder)
    (folder / "bowed").mkdir(parents=True, exist_ok=True)
    (folder / "plucked").mkdir(exist_ok=True)
    for n, pitch in enumerate(PITCHES, start=1):
        sf.write(folder / "bowed" / f"long_{note_name(pitch)}.wav", bowed(pitch, 44100), 44100)
        sf.write(folder / "plucked" / f"pluck-{n:02d}.flac", plucked(pitch, 22050, soft=n % 2 == 0), 22050)
    return folder


if __name__ == "__main__":
    out = make_library(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-library"))
    print(f"wrote {2 * len(PITCHES)} samples to {out}")
