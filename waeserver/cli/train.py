"""``waeserver train``: one auto-encoder, from a --config YAML, then the flags given, over the defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from waeserver.cli.options import seed_arg

VARIANTS = ("wae-mmd", "wae-note", "wae-style", "wae-fader")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="dataset folder")
    p.add_argument("--variant", choices=VARIANTS, default="wae-fader",
                   help="the model or one of its ablations (default wae-fader)")
    p.add_argument("--out", required=True, type=Path, help="run folder: checkpoint, metrics.csv, weights")
    p.add_argument("--config", type=Path, help="YAML training config (every key also a default below)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--epochs", type=int, help="most epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, help="notes per batch")
    p.add_argument("--latent", type=int, help="latent size (default 3)")
    seed_arg(p, "the weights, the batches and the latent draws")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")


def run(args: argparse.Namespace) -> int:
    from waeserver.model.training import Dist, TrainError, train
    from waeserver.settings import read_mapping

    overrides = read_mapping(args.config, "training config", TrainError) if args.config else {}
    for key in ("epochs", "batch_size", "latent"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    # --seed always has a value (0); it gives way only to a seed the --config file sets.
    if args.seed != 0 or "seed" not in overrides:
        overrides["seed"] = args.seed
    summary = train(args.data, args.variant, args.out, overrides, args.device, args.resume)
    if Dist.from_env().main:
        print(f"trained {args.variant}: {summary['epochs_run']} epochs in {summary['train_seconds']} s, "
              f"best validation reconstruction {summary['best_valid_recon']} (epoch {summary['best_epoch']}) "
              f"-> {args.out}")
    return 0
