"""``waeserver transform``: the encoder as an audio effect."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from waeserver.cli.options import device_arg, inverter_arg, model_arg, seed_arg, style_arg

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, metavar="IN", help="a recorded note: WAV, FLAC or AIFF, any rate")
    model_arg(p)
    p.add_argument("--pitch", default="auto", help="MIDI pitch to decode with, or 'auto' (the note's own, by YIN)")
    p.add_argument("--velocity", type=int, default=100, help="MIDI velocity 1..127 (default 100)")
    style_arg(p, "style weights (default: the first style)")
    p.add_argument("--z-shift", default=None, metavar="a,b,c", help="added to the note's latent point")
    p.add_argument("--variations", type=int, default=0, metavar="N",
                   help="N notes from points drawn around the note's (OUT is then a folder)")
    p.add_argument("--spread", type=float, default=0.5, help="standard deviation of the variations (default 0.5)")
    seed_arg(p, "the variations")
    inverter_arg(p, "gla or a real-time inverter the bundle carries")
    device_arg(p)
    p.add_argument("-o", "--output", required=True, type=Path, help="WAV file to write (a folder with --variations)")


def run(args: argparse.Namespace) -> int:
    from waeserver.data.user_samples import load_mono
    from waeserver.sound.bundle import load_bundle
    from waeserver.sound.generate import parse_style, parse_vector, write_note
    from waeserver.sound.transform import TransformError, check_pitch, note_pitch, prepare_note, transform

    bundle = load_bundle(args.model, args.device)
    source = args.input
    try:
        wave = load_mono(source, bundle.sample_rate)
    except (OSError, RuntimeError, ValueError) as exc:   # soundfile raises these for what it cannot read
        raise TransformError(f"cannot read {source}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    note = prepare_note(wave, bundle.n_samples, bundle.sample_rate)
    if args.pitch == "auto":
        pitch = note_pitch(note, bundle)
    else:
        try:
            pitch = int(args.pitch)
        except ValueError:
            raise TransformError(f"--pitch must be a MIDI pitch or 'auto', got {args.pitch!r}") from None
        pitch = check_pitch(pitch, bundle)
    style = parse_style(args.style, bundle)
    shift = None if args.z_shift is None else parse_vector(args.z_shift, bundle.latent_size, "--z-shift")
    if not 0 <= args.variations <= 1000 or not (math.isfinite(args.spread) and args.spread >= 0):
        raise TransformError("--variations must be 0 to 1000 and --spread a finite number from 0")
    out = args.output
    if args.variations:
        out.mkdir(parents=True, exist_ok=True)
    elif not out.parent.is_dir():
        raise TransformError(f"output folder {out.parent} does not exist")
    z, waves = transform(bundle, note, pitch, args.velocity, style, shift, args.variations, args.spread,
                         args.seed, args.inverter)
    paths = [out / f"{source.stem}-{k + 1:03d}.wav" for k in range(args.variations)] if args.variations else [out]
    for path, wave in zip(paths, waves):
        write_note(path, wave, bundle.sample_rate)
    log.info("%s: z %s, pitch %d", source, ",".join(f"{v:.3f}" for v in z.tolist()), pitch)
    print(f"wrote {len(paths)} note{'s' if len(paths) > 1 else ''} to {out} (pitch {pitch}, latent point "
          f"{', '.join(f'{v:.3f}' for v in z.tolist())})")
    return 0
