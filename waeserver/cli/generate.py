"""``waeserver generate``: one note to a WAV file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from waeserver.cli.options import device_arg, inverter_arg, model_arg, seed_arg, style_arg

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_arg(p)
    p.add_argument("--pitch", required=True, type=int, help="MIDI pitch")
    p.add_argument("--velocity", type=int, default=100, help="MIDI velocity 1..127 (default 100)")
    style_arg(p, "style weights, e.g. violin=0.5,clarinet=0.5 (default: the first style)")
    p.add_argument("--z", default="random", help="latent point a,b,c or 'random' (default)")
    seed_arg(p, "the random latent point")
    inverter_arg(p, "gla (Griffin-Lim, the offline reference) or a real-time inverter the bundle "
                    "carries (default: the bundle's own)")
    device_arg(p)
    p.add_argument("-o", "--output", required=True, type=Path, help="WAV file to write")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from waeserver.sound.bundle import BundleError, load_bundle
    from waeserver.sound.generate import generate_note, parse_style, parse_z, write_note

    bundle = load_bundle(args.model, args.device)
    style = parse_style(args.style, bundle)
    z = parse_z(args.z, bundle.latent_size, args.seed)
    wave = generate_note(bundle, args.pitch, args.velocity, style, z, args.inverter)
    if not args.output.parent.is_dir():
        raise BundleError(f"output folder {args.output.parent} does not exist")
    write_note(args.output, wave, bundle.sample_rate)
    log.info("%s: pitch %d, z %s -> %s", bundle.name, args.pitch, ",".join(f"{v:.3f}" for v in z.tolist()),
             args.output)
    print(f"wrote {args.output} ({len(wave) / bundle.sample_rate:.2f} s at {bundle.sample_rate} Hz, "
          f"peak {float(np.abs(wave).max()):.3f})")
    return 0
