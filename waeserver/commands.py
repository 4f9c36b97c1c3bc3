"""Handlers of the ``waeserver dataset`` subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path


def dataset_render(args: argparse.Namespace) -> int:
    from waeserver.soundfont import render_dataset

    meta = render_dataset(args.preset, args.out, args.soundfont, args.sample_rate, args.workers)
    print(f"rendered {args.preset}: {meta['n_notes']} notes, {meta['skipped']['silent']} silent left out, "
          f"{meta['render_seconds']} s -> {args.out}")
    return 0


def dataset_import(args: argparse.Namespace) -> int:
    from waeserver.library import import_library

    meta = import_library(args.src, args.tags, args.out, args.sample_rate)
    for rel, why in meta["rejected"].items():
        print(f"left out {rel}: {why}")
    print(f"imported {meta['n_notes']} notes in {len(meta['styles'])} styles "
          f"({', '.join(meta['styles'])}), {len(meta['rejected'])} files left out -> {args.out}")
    return 0


def dataset_info(args: argparse.Namespace) -> int:
    from waeserver.dataset import NoteDataset, info_text, plot_examples

    ds = NoteDataset(args.dir)
    print(info_text(ds))
    if args.plot is not None:
        path = plot_examples(ds, Path(args.plot) if args.plot else ds.root / "examples.png")
        print(f"plot: {path}")
    return 0
