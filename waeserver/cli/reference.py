"""docs/reference.md's tables, written from the code's own so that the reference cannot drift from it.

``python -m waeserver.cli.reference`` rewrites every block between ``<!-- generated: NAME -->`` and
``<!-- end: NAME -->`` in docs/reference.md and leaves the prose around them alone;
tests/test_docs.py fails while the file differs from what this would write. The blocks:
``commands`` (every subcommand and flag, from :func:`waeserver.cli.build_parser`), ``osc`` (from
:data:`waeserver.live.osc.ADDRESSES`), ``config`` (:class:`waeserver.live.config.ServeConfig`, its
``HELP`` and the flag of ``serve`` for each option) and ``curves`` (:data:`waeserver.live.midi.CURVES`).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _synopsis(action: argparse.Action) -> str:
    """How an argument is written: ``SONG``, ``--model MODEL``, ``--plot [PNG]``, ``--resume``."""
    if action.choices is not None and not isinstance(action.choices, dict):
        value = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        value = action.metavar or action.dest.upper()
    if action.nargs == "?":
        value = f"[{value}]"
    elif action.nargs == "+":
        value = f"{value} [{value} ...]"
    if not action.option_strings:
        return value
    names = ", ".join(action.option_strings)
    return names if action.nargs == 0 else f"{names} {value}"


def _argument_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.required or not action.option_strings:
            default = "required"
        elif action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
            default = ""
        else:
            default = f"`{action.default}`"
        meaning = formatter._expand_help(action) if action.help else ""
        rows.append((f"`{_synopsis(action)}`", default, meaning))
    return rows


def commands_text() -> str:
    """Every command and subcommand of ``waeserver``, each with a table of its arguments."""
    from waeserver.cli import build_parser

    parser = build_parser()
    parts = ["Options of `waeserver` itself, before the command:\n\n",
             _table(("argument", "default", "meaning"), _argument_rows(parser))]

    def walk(prog: str, sub: argparse.ArgumentParser, level: int) -> None:
        parts.append(f"\n{'#' * level} `{prog}`\n\n")
        if sub.description:
            parts.append(f"{sub.description[0].upper()}{sub.description[1:]}.\n\n")
        children = _subparsers(sub)
        rows = _argument_rows(sub)
        if rows:
            parts.append(_table(("argument", "default", "meaning"), rows))
        for name, child in children.items():
            walk(f"{prog} {name}", child, level + 1)

    for name, sub in _subparsers(parser).items():
        walk(f"waeserver {name}", sub, 3)
    return "".join(parts)


def osc_text() -> str:
    """The OSC address table: arguments, effect and reply of every address."""
    from waeserver.live.osc import ADDRESSES

    rows = [(f"`{address}`", spec.args, spec.effect, spec.reply) for address, spec in ADDRESSES.items()]
    return _table(("address", "arguments", "effect", "reply"), rows)


def _yaml_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def config_text() -> str:
    """Every option of the daemon's configuration: its flag, default and meaning."""
    from waeserver.cli import build_parser
    from waeserver.live.config import HELP, ServeConfig

    serve = _subparsers(build_parser())["serve"]
    flags = {a.dest: a.option_strings for a in serve._actions if a.option_strings}
    rows = []
    for f in fields(ServeConfig):
        default = f.default if f.default is not MISSING else f.default_factory()
        flag = ", ".join(f"`{s}`" for s in flags.get(f.name, ())) or "none"
        rows.append((f"`{f.name}`", flag, f"`{_yaml_value(default)}`", HELP.get(f.name, "")))
    return _table(("option", "flag", "default", "meaning"), rows)


def curves_text() -> str:
    """The named velocity curves and their exponents."""
    from waeserver.live.midi import CURVES

    return _table(("`velocity_curve`", "exponent e"), [(f"`{name}`", f"{e:g}") for name, e in CURVES.items()])


BLOCKS = {"commands": commands_text, "osc": osc_text, "config": config_text, "curves": curves_text}


def rewrite(text: str) -> str:
    """``text`` with every generated block written anew; an unknown block name is an error."""
    def block(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise ValueError(f"unknown generated block {name!r} (blocks: {', '.join(BLOCKS)})")
        body = re.sub(r"\n{3,}", "\n\n", BLOCKS[name]().strip())
        return f"{match[1]}\n{body}\n\n{match[4]}"

    return BLOCK.sub(block, text)


def blocks(text: str) -> dict[str, str]:
    """The generated blocks of ``text``, by name."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def main() -> int:
    text = REFERENCE.read_text()
    new = rewrite(text)
    missing = sorted(set(BLOCKS) - set(blocks(new)))
    if missing:
        print(f"{REFERENCE} lacks the blocks {missing}", file=sys.stderr)
        return 1
    if new != text:
        REFERENCE.write_text(new)
        print(f"rewrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
