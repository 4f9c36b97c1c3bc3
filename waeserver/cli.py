"""The ``waeserver`` command line (see ../shared/CONTRACT.md).

Each subcommand is a row of :data:`COMMANDS`: its arguments, and the ``module:function`` that runs
it, imported only when that subcommand is used so that ``--help`` stays quick. A subcommand whose
module is not part of this build is absent. Every failure ends in one line on stderr and a
non-zero exit; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from pathlib import Path

log = logging.getLogger("waeserver")

DEFAULT_MODEL = "gm-orchestra"
VARIANTS = ("wae-mmd", "wae-note", "wae-style", "wae-fader")


def _dataset_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="{render,import,info}")
    r = sub.add_parser("render", help="render a labelled note dataset from a soundfont")
    r.add_argument("--preset", required=True, help="orchestra12, techniques or tiny")
    r.add_argument("--soundfont", help="path or name (FluidR3_GM, TimGM6mb, ...); default: the preset's")
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--sample-rate", type=int, default=22050)
    r.add_argument("--workers", type=int, default=None, help="render processes (default: cores, at most 4)")
    r.set_defaults(handler="waeserver.commands:dataset_render")
    i = sub.add_parser("import", help="turn a folder of samples plus a tag file into a dataset")
    i.add_argument("src", type=Path)
    i.add_argument("--tags", required=True, type=Path, help="YAML or CSV tag file")
    i.add_argument("--out", required=True, type=Path)
    i.add_argument("--sample-rate", type=int, default=22050)
    i.set_defaults(handler="waeserver.commands:dataset_import")
    n = sub.add_parser("info", help="counts per attribute and split")
    n.add_argument("dir", type=Path)
    n.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                   help="also write a grid of example spectrograms per style (default DIR/examples.png)")
    n.set_defaults(handler="waeserver.commands:dataset_info")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--variant", choices=VARIANTS, default="wae-fader")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--config", type=Path, help="YAML training config (every key also a default below)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--latent", type=int, help="latent size (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")


def _model_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--model", required=required, default=None if required else DEFAULT_MODEL,
                   help=f"bundle folder or name under models/ (default {DEFAULT_MODEL})")


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="auto")
    p.add_argument("--ae-run", type=Path, help="reuse this trained auto-encoder run")
    p.add_argument("--from-bundle", type=Path, help="take the auto-encoder from this bundle (and keep its "
                   "inverters beside the new one)")
    p.add_argument("--inverter-run", "--mcnn-run", type=Path, dest="inverter_run",
                   help="reuse this trained inverter (folder with inverter.safetensors or mcnn.safetensors)")
    p.add_argument("--work", type=Path, help="stages and checkpoints (default runs/build-NAME)")
    p.add_argument("--config", type=Path, help="YAML with autoencoder, inverter, finetune sections")
    p.add_argument("--no-encoder", action="store_true", help="leave the encoder out of the bundle")


def _generate_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--pitch", required=True, type=int, help="MIDI pitch")
    p.add_argument("--velocity", type=int, default=100, help="MIDI velocity 1..127 (default 100)")
    p.add_argument("--style", default=None, metavar="NAME=W,...",
                   help="style weights, e.g. violin=0.5,clarinet=0.5 (default: the first style)")
    p.add_argument("--z", default="random", help="latent point a,b,c or 'random' (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inverter", default=None,
                   help="gla (Griffin-Lim, the offline reference) or a real-time inverter the bundle "
                        "carries (default: the bundle's own)")
    p.add_argument("--device", default="auto")
    p.add_argument("-o", "--output", required=True, type=Path, help="WAV file to write")


def _transform_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, metavar="IN", help="a recorded note: WAV, FLAC or AIFF, any rate")
    _model_arg(p)
    p.add_argument("--pitch", default="auto", help="MIDI pitch to decode with, or 'auto' (the note's own, by YIN)")
    p.add_argument("--velocity", type=int, default=100, help="MIDI velocity 1..127 (default 100)")
    p.add_argument("--style", default=None, metavar="NAME=W,...", help="style weights (default: the first style)")
    p.add_argument("--z-shift", default=None, metavar="a,b,c", help="added to the note's latent point")
    p.add_argument("--variations", type=int, default=0, metavar="N",
                   help="N notes from points drawn around the note's (OUT is then a folder)")
    p.add_argument("--spread", type=float, default=0.5, help="standard deviation of the variations (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inverter", default=None, help="gla or a real-time inverter the bundle carries")
    p.add_argument("--device", default="auto")
    p.add_argument("-o", "--output", required=True, type=Path, help="WAV file to write (a folder with --variations)")


def _bench_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--device", default=None, help="one device (default: every available one)")
    p.add_argument("--data", type=Path, help="dataset for the quality figures (default: the card's)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    p.add_argument("--repeats", type=int, default=50, help="timed repeats per figure")
    p.add_argument("--speed-only", action="store_true", help="skip the quality figures")
    p.add_argument("--notes", type=int, default=48, help="test notes for the quality figures (default 48)")
    p.add_argument("--judges", type=Path, help="folder caching the study's attribute classifiers: their "
                   "accuracy on each path's audio is measured too (trained there when missing)")


# name: (help, argument builder, handler module:function)
COMMANDS: dict[str, tuple] = {
    "dataset": ("render, import and inspect note datasets", _dataset_args, None),
    "train": ("train one auto-encoder", _train_args, "waeserver.train:run_train"),
    "build-model": ("whole pipeline: auto-encoder, real-time inverter, fine-tune, evaluation, bundle",
                    _build_args, "waeserver.build:run_build"),
    "evaluate": ("the study's metrics and figures",
                 lambda p: (p.add_argument("--model", required=True, nargs="+",
                                           help="bundle(s) or training run(s)"),
                            p.add_argument("--data", required=True, type=Path),
                            p.add_argument("--out", required=True, type=Path),
                            p.add_argument("--device", default="auto")),
                 "waeserver.evaluate:run_evaluate"),
    "generate": ("one note to a WAV file", _generate_args, "waeserver.generate:run_generate"),
    "transform": ("the encoder as an audio effect: a recorded note encoded, decoded with another pitch, "
                  "velocity or style", _transform_args, "waeserver.transform:run_transform"),
    "bench": ("speed and latency figures of this machine", _bench_args, "waeserver.bench:run_bench"),
    "render": ("offline render of a MIDI file, with scripted control changes, through the same engine as serve",
               lambda p: importlib.import_module("waeserver.offline").add_arguments(p),
               "waeserver.offline:run_render"),
    "serve": ("the live daemon",
              lambda p: importlib.import_module("waeserver.config").add_config_arguments(p),
              "waeserver.server:run_serve"),
}


def _handler_available(handler: str | None) -> bool:
    if handler is None:
        return True
    return importlib.util.find_spec(handler.split(":")[0]) is not None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waeserver", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging; -v shows tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, handler) in COMMANDS.items():
        if not _handler_available(handler):
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        if handler:
            p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    module_name, func_name = args.handler.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("waeserver: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, never a bare traceback
        if args.verbose:
            log.exception("failed")
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, OSError, LookupError)):
            message = f"{type(exc).__name__}: {message}"
        print(f"waeserver: error: {message.splitlines()[0]}", file=sys.stderr)
        return 1
