"""``waeserver evaluate``: the study's metrics and figures for trained runs or bundles, and its page."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, nargs="+", help="bundle(s) or training run(s)")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="auto")
    p.add_argument("--latent-history", nargs="+", type=Path, metavar="RUN_OR_NPZ",
                   help="one per --model: where its latent_history.npz is (default: the model's folder, "
                        "or the run its bundle card names)")
    p.add_argument("--frames", type=int, default=40, help="most frames per latent animation")


def run(args: argparse.Namespace) -> int:
    from waeserver.model.evaluation import EvaluateError, ablation_markdown, evaluate
    from waeserver.sound.bundle import load_wae_or_bundle
    from waeserver.sound.study_page import find_history, write_study_page

    if args.latent_history is not None and len(args.latent_history) != len(args.model):
        raise EvaluateError(f"--latent-history needs one path per --model ({len(args.model)}), "
                            f"got {len(args.latent_history)}")
    if args.frames < 2:
        raise EvaluateError(f"--frames must be at least 2, got {args.frames}")
    for model, history in zip(args.model, args.latent_history or []):
        find_history(Path(model), history)   # a history that is not there is refused before the work
    report = evaluate(args.model, args.data, args.out, args.device, load=load_wae_or_bundle)
    page = write_study_page(report, args.model, args.data, args.out, args.device, args.latent_history,
                            max_frames=args.frames)
    print(ablation_markdown(report))
    print(f"report: {args.out / 'ablation.md'}, {args.out / 'report.json'}, {page}")
    return 0
