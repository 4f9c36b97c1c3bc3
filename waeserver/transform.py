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

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import torch

from waeserver.bundle import Bundle, load_bundle

log = logging.getLogger(__name__)

ONSET_DB = -50.0          # the note starts where it first rises this far under its peak
SILENT_PEAK = 1e-4        # a take whose peak stays under this (-80 dBFS) holds no note
SHORTEST_S = 0.05         # shorter than this after the onset: no note to encode
FADE_S = 0.02


class TransformError(ValueError):
    """A sound that cannot be transformed, with the reason."""


def prepare_note(wave: np.ndarray, n_samples: int, sample_rate: int) -> np.ndarray:
    """A mono take at the model's rate ``[T']`` to one onset-aligned note of ``n_samples``."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or not np.isfinite(wave).all():
        raise TransformError("the sound must be finite mono samples")
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak < SILENT_PEAK:
        raise TransformError("the sound is silent (peak under -80 dBFS): no note to encode")
    loud = np.nonzero(np.abs(wave) > peak * 10 ** (ONSET_DB / 20))[0]
    start, end = max(0, int(loud[0]) - 32), int(loud[-1]) + 1
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
    from waeserver.pitch import estimate_pitch

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
    from waeserver.spectral import MelSpectrogram

    if bundle.encoder is None:
        raise TransformError(f"{bundle.name} carries no encoder")
    mel = MelSpectrogram(bundle.spectral).to(bundle.device)(torch.from_numpy(note)[None].to(bundle.device))
    return bundle.encoder(mel)[0]


@torch.no_grad()
def transform(bundle: Bundle, note: np.ndarray, pitch: int, velocity: int, style: torch.Tensor,
              z_shift: torch.Tensor | None = None, variations: int = 0, spread: float = 0.5,
              seed: int = 0, inverter: str | None = None) -> tuple[torch.Tensor, list[np.ndarray]]:
    """A prepared note to (its latent point ``[D]``, the notes decoded from it or around it ``[T]``)."""
    from waeserver.generate import generate_note

    z = encode(bundle, note).cpu()
    if z_shift is not None:
        z = z + z_shift
    if variations:
        gen = torch.Generator().manual_seed(seed)
        points = z + spread * torch.randn(variations, z.numel(), generator=gen)
    else:
        points = z[None]
    return z, [generate_note(bundle, pitch, velocity, style, p, inverter) for p in points]


def run_transform(args: argparse.Namespace) -> int:
    import soundfile as sf

    from waeserver.generate import parse_style, parse_vector
    from waeserver.library import load_mono

    bundle = load_bundle(args.model, getattr(args, "device", None) or "cpu")
    source = Path(args.input)
    try:
        wave = load_mono(source, bundle.sample_rate)
    except (OSError, RuntimeError, ValueError) as exc:   # soundfile raises these for what it cannot read
        raise TransformError(f"cannot read {source}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    note = prepare_note(wave, bundle.n_samples, bundle.sample_rate)
    given = getattr(args, "pitch", None)
    pitch = note_pitch(note, bundle) if given in (None, "auto") else check_pitch(_int(given, "--pitch"), bundle)
    style = parse_style(getattr(args, "style", None), bundle)
    shift = getattr(args, "z_shift", None)
    shift = None if shift is None else parse_vector(shift, bundle.latent_size, "--z-shift")
    variations = int(getattr(args, "variations", 0) or 0)
    spread = float(getattr(args, "spread", 0.5))
    if not 0 <= variations <= 1000 or not (math.isfinite(spread) and spread >= 0):
        raise TransformError("--variations must be 0 to 1000 and --spread a finite number from 0")
    out = Path(args.output)
    if variations:
        out.mkdir(parents=True, exist_ok=True)
    elif not out.parent.is_dir():
        raise TransformError(f"output folder {out.parent} does not exist")
    z, waves = transform(bundle, note, pitch, int(getattr(args, "velocity", 100)), style, shift, variations,
                         spread, int(getattr(args, "seed", 0)), getattr(args, "inverter", None))
    paths = [out / f"{source.stem}-{k + 1:03d}.wav" for k in range(variations)] if variations else [out]
    for path, wave in zip(paths, waves):
        sf.write(path, np.clip(wave, -1.0, 1.0), bundle.sample_rate, subtype="PCM_16")
    log.info("%s: z %s, pitch %d", source, ",".join(f"{v:.3f}" for v in z.tolist()), pitch)
    print(f"wrote {len(paths)} note{'s' if len(paths) > 1 else ''} to {out} (pitch {pitch}, latent point "
          f"{', '.join(f'{v:.3f}' for v in z.tolist())})")
    return 0


def _int(text, what: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise TransformError(f"{what} must be a MIDI pitch or 'auto', got {text!r}") from None


__all__ = ["TransformError", "check_pitch", "encode", "note_pitch", "prepare_note",
           "run_transform", "transform"]
