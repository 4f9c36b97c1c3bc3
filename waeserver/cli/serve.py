"""``waeserver serve``: the live daemon. Every option of its config file is also a flag here."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from waeserver.live.config import HELP, ServeConfig, resolve

LIST_FLAGS = {"osc_allow": "--osc-allow", "midi_inputs": "--midi-input", "cc_map": "--cc", "programs": "--program"}


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """``--config`` and one flag per option (``--osc-port``, ...), all defaulting to None (= file or default)."""
    parser.add_argument("--config", type=Path, help="YAML config file (every option is also a flag)")
    for f in fields(ServeConfig):
        if f.name in skip:
            continue
        flag = LIST_FLAGS.get(f.name, "--" + f.name.replace("_", "-"))
        if f.name in LIST_FLAGS:
            parser.add_argument(flag, dest=f.name, action="append", default=None, help=HELP[f.name])
            continue
        help_text = f"{HELP[f.name]} (default: {f.default})"
        kind = {"bool": argparse.BooleanOptionalAction, "int": int, "float": float}.get(f.type)
        if f.type == "bool":
            parser.add_argument(flag, dest=f.name, action=kind, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind or str, default=None, help=help_text)


def config_of(args: argparse.Namespace) -> ServeConfig:
    """Defaults, then ``--config``, then the flags given."""
    return resolve(args.config, {f.name: getattr(args, f.name, None) for f in fields(ServeConfig)})


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_flags(p)


def run(args: argparse.Namespace) -> int:
    from waeserver.live.daemon import serve

    return serve(config_of(args))
