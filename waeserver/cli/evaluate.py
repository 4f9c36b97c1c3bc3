"""``waeserver evaluate``: the study's metrics and figures for trained runs or bundles."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, nargs="+", help="bundle(s) or training run(s)")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    from waeserver.model.evaluation import ablation_markdown, evaluate
    from waeserver.sound.bundle import load_wae_or_bundle

    report = evaluate(args.model, args.data, args.out, args.device, load=load_wae_or_bundle)
    print(ablation_markdown(report))
    print(f"report: {args.out / 'ablation.md'}, {args.out / 'report.json'}")
    return 0
