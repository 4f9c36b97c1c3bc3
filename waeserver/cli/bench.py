"""``waeserver bench``: speed and latency figures of this machine, and the bundle's quality figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from waeserver.cli.options import model_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_arg(p)
    p.add_argument("--device", default=None, help="one device (default: every available one)")
    p.add_argument("--data", type=Path, help="dataset for the quality figures (default: the card's)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    p.add_argument("--repeats", type=int, default=50, help="timed repeats per figure")
    p.add_argument("--speed-only", action="store_true", help="skip the quality figures")
    p.add_argument("--notes", type=int, default=48, help="test notes for the quality figures (default 48)")
    p.add_argument("--judges", type=Path, help="folder caching the study's attribute classifiers: their "
                   "accuracy on each path's audio is measured too (trained there when missing)")


def run(args: argparse.Namespace) -> int:
    from waeserver.sound.bench import bench, format_report

    devices = None if args.device in (None, "auto", "all") else [args.device]
    report = bench(args.model, devices, args.data, args.repeats, quality=not args.speed_only,
                   max_notes=args.notes, judges_dir=args.judges)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0
