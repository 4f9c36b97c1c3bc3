"""Arguments more than one command shares."""

from __future__ import annotations

import argparse

DEFAULT_MODEL = "gm-orchestra"


def model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"bundle folder or name under models/ (default {DEFAULT_MODEL})")


def style_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--style", default=None, metavar="NAME=W,...", help=help_text)


def inverter_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--inverter", default=None, help=help_text)


def device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")


def seed_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--seed", type=int, default=0, help=f"seed of {what} (default 0)")


def sample_rate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample-rate", type=int, default=22050, help="the dataset's sample rate in Hz (default 22050)")
