"""The command table: every command's module declares its arguments and runs, and building the
parser (what ``--help`` does) loads neither torch nor what the commands run."""

from __future__ import annotations

import importlib
import subprocess
import sys

from waeserver.cli import COMMANDS


def test_every_command_module_declares_its_arguments_and_its_run():
    for name, (help_text, module, needs) in COMMANDS.items():
        command = importlib.import_module(f"waeserver.cli.{module}")
        assert callable(command.add_arguments) and callable(command.run), name
        assert help_text and importlib.util.find_spec(needs) is not None, name


def test_help_of_every_command_loads_no_torch_and_no_command_code():
    script = """
import contextlib, io, sys
from waeserver.cli import COMMANDS, build_parser
parser = build_parser()
for name in COMMANDS:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            parser.parse_args([name, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, name
    assert "usage: waeserver " + name in out.getvalue(), name
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith("waeserver.sound.")
               or m.startswith("waeserver.model.") and m != "waeserver.model.devices")   # a name check, no torch
print(heavy)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_an_unknown_command_or_flag_is_refused_by_argparse():
    for argv in (["sing"], ["generate", "--pitch", "60", "--loudness", "3", "-o", "x.wav"]):
        result = subprocess.run([sys.executable, "-m", "waeserver", *argv], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "usage: waeserver" in result.stderr
