"""``waeserver transform``: the encoder as an audio effect (Bitton et al., DAFx-19).

A recorded note (any WAV, FLAC or AIFF, any rate, mono or stereo) is mixed to mono, resampled to
the model's rate, aligned on its onset (its leading silence cut, 50 dB under its peak) and trimmed
or padded to the model's length (a 20 ms fade where it is cut); its log-mel goes through the
bundle's encoder to a latent point, which is kept (or shifted by ``--z-shift``), or surrounded by
``--variations N`` points drawn around it (``--spread`` standard deviations of the prior); each point
is decoded with the asked pitch (``--pitch``, or the note's own, estimated by YIN), velocity and
style, and inverted by the bundle's inverter (or Griffin-Lim with ``--inverter gla``).

The note finding and encoding (:func:`prepare_note`, :func:`encode`) are what the live daemon's
sampling uses too; they refuse silence, noise without a pitch and takes too short to hold a note
with a :class:`TransformError` naming the reason.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from waeserver.sound.bundle import Bundle

log = logging.getLogger(__name__)

ONSET_DB = -50.0          # the note starts where it first rises this far under its peak
SILENT_PEAK = 1e-4        # a take whose peak stays under this (-80 dBFS) holds no note
SHORTEST_S = 0.05         # shorter than this after the onset: no note to encode
FADE_S = 0.02


class TransformError(ValueError):
    """A sound that cannot be transformed, with the reason."""


def note_span(wave: np.ndarray) -> tuple[int, int]:
    """``(start, end)`` samples of the note in a mono sound that is not silent: from just before it
    first rises to ``ONSET_DB`` under its peak to the last sample that loud."""
    loud = np.nonzero(np.abs(wave) > float(np.abs(wave).max()) * 10 ** (ONSET_DB / 20))[0]
    return max(0, int(loud[0]) - 32), int(loud[-1]) + 1


def prepare_note(wave: np.ndarray, n_samples: int, sample_rate: int) -> np.ndarray:
    """A mono take at the model's rate ``[T']`` to one onset-aligned note of ``n_samples``."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or not np.isfinite(wave).all():
        raise TransformError("the sound must be finite mono samples")
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak < SILENT_PEAK:
        raise TransformError("the sound is silent (peak under -80 dBFS): no note to encode")
    start, end = note_span(wave)
    if end - start < SHORTEST_S * sample_rate:
        raise TransformError(f"the note is too short ({(end - start) / sample_rate * 1000:.0f} ms after its "
                             f"onset; at least {SHORTEST_S * 1000:.0f} ms)")
    note = wave[start:start + n_samples].copy()
    if note.size == n_samples and start + n_samples < wave.size:
        fade = int(FADE_S * sample_rate)
        note[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return np.pad(note, (0, n_samples - note.size))


def note_pitch(note: np.ndarray, bundle: Bundle) -> int:
    """The note's MIDI pitch by YIN, rounded; refused when none is clear or it is out of range."""
    from waeserver.dsp.pitch import estimate_pitch

    found = estimate_pitch(note, bundle.sample_rate)
    if found is None:
        raise TransformError("no clear pitch in the sound (noise?): give the pitch")
    return check_pitch(int(round(found.midi)), bundle)


def check_pitch(pitch: int, bundle: Bundle) -> int:
    low, high = bundle.pitch_range
    if not low <= pitch <= high:
        raise TransformError(f"pitch {pitch} is outside {bundle.name}'s range {low}..{high}")
    return pitch


@torch.no_grad()
def encode(bundle: Bundle, note: np.ndarray) -> torch.Tensor:
    """One prepared note ``[T]`` to its latent point ``[D]``."""
    from waeserver.dsp.spectral import MelSpectrogram

    if bundle.encoder is None:
        raise TransformError(f"{bundle.name} carries no encoder")
    mel = MelSpectrogram(bundle.spectral).to(bundle.device)(torch.from_numpy(note)[None].to(bundle.device))
    return bundle.encoder(mel)[0]


@torch.no_grad()
def transform(bundle: Bundle, note: np.ndarray, pitch: int, velocity: int, style: torch.Tensor,
              z_shift: torch.Tensor | None = None, variations: int = 0, spread: float = 0.5,
              seed: int = 0, inverter: str | None = None) -> tuple[torch.Tensor, list[np.ndarray]]:
    """A prepared note to (its latent point ``[D]``, the notes decoded from it or around it ``[T]``)."""
    from waeserver.sound.generate import generate_note

    z = encode(bundle, note).cpu()
    if z_shift is not None:
        z = z + z_shift
    if variations:
        gen = torch.Generator().manual_seed(seed)
        points = z + spread * torch.randn(variations, z.numel(), generator=gen)
    else:
        points = z[None]
    return z, [generate_note(bundle, pitch, velocity, style, p, inverter) for p in points]


__all__ = ["TransformError", "check_pitch", "encode", "note_pitch", "prepare_note", "transform"]
