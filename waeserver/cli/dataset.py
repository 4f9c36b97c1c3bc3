"""``waeserver dataset``: render, import and inspect note datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from waeserver.cli.options import sample_rate_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="{render,import,info}")
    r = sub.add_parser("render", help="render a labelled note dataset from a soundfont")
    r.add_argument("--preset", required=True, help="orchestra12, techniques or tiny")
    r.add_argument("--soundfont", help="path or name (FluidR3_GM, TimGM6mb, ...); default: the preset's")
    r.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    sample_rate_arg(r)
    r.add_argument("--workers", type=int, default=None, help="render processes (default: cores, at most 4)")
    r.set_defaults(action_run=dataset_render)
    i = sub.add_parser("import", help="turn a folder of samples plus a tag file into a dataset")
    i.add_argument("src", type=Path, help="folder of samples (WAV, FLAC or AIFF, any rate, mono or stereo)")
    i.add_argument("--tags", required=True, type=Path, help="YAML or CSV tag file")
    i.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    sample_rate_arg(i)
    i.set_defaults(action_run=dataset_import)
    n = sub.add_parser("info", help="counts per attribute and split")
    n.add_argument("dir", type=Path, help="dataset folder")
    n.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                   help="also write a grid of example spectrograms per style (default DIR/examples.png)")
    n.set_defaults(action_run=dataset_info)


def run(args: argparse.Namespace) -> int:
    return args.action_run(args)


def dataset_render(args: argparse.Namespace) -> int:
    from waeserver.data.soundfont import render_dataset

    meta = render_dataset(args.preset, args.out, args.soundfont, args.sample_rate, args.workers)
    print(f"rendered {args.preset}: {meta['n_notes']} notes, {meta['skipped']['silent']} silent left out, "
          f"{meta['render_seconds']} s -> {args.out}")
    return 0


def dataset_import(args: argparse.Namespace) -> int:
    from waeserver.data.user_samples import import_library

    meta = import_library(args.src, args.tags, args.out, args.sample_rate)
    for rel, why in meta["rejected"].items():
        print(f"left out {rel}: {why}")
    n_styles = len(meta["styles"])
    print(f"imported {meta['n_notes']} notes in {n_styles} style{'' if n_styles == 1 else 's'} "
          f"({', '.join(meta['styles'])}), {len(meta['rejected'])} files left out -> {args.out}")
    return 0


def dataset_info(args: argparse.Namespace) -> int:
    from waeserver.data.dataset import NoteDataset, info_text, plot_examples

    ds = NoteDataset(args.dir)
    print(info_text(ds))
    if args.plot is not None:
        path = plot_examples(ds, Path(args.plot) if args.plot else ds.root / "examples.png")
        print(f"plot: {path}")
    return 0
