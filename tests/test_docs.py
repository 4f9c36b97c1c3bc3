"""The documentation held to the code and the tree: docs/reference.md's generated tables current and
its hand-written parts naming what the code has, no pointer outside the repository, every link resolving."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml

from waeserver.cli import reference
from waeserver.sound.bundle import REQUIRED_KEYS

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"


def section(text: str, heading: str) -> str:
    """The text under ``## heading``, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/reference.md has no section '## {heading}'"
    return match[1]


def test_the_reference_tables_are_generated_from_the_code():
    text = REFERENCE.read_text()
    assert set(reference.blocks(text)) == set(reference.BLOCKS), \
        f"docs/reference.md needs exactly the generated blocks {sorted(reference.BLOCKS)}"
    fresh = reference.rewrite(text)
    stale = [name for name, body in reference.blocks(fresh).items() if reference.blocks(text)[name] != body]
    diff = "".join(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True), "docs/reference.md",
                                        "what the code says", n=0))
    assert not stale, (
        f"docs/reference.md's generated blocks {stale} are out of step with the code: run "
        "`.venv/bin/python -m waeserver.cli.reference` and commit docs/reference.md with the change "
        "(a new OSC address needs its OscSpec in waeserver.live.osc.ADDRESSES first)\n" + diff[:4000])


def test_the_reference_names_every_card_key():
    cards = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "models").glob("*/card.yaml"))]
    keys = set().union(*REQUIRED_KEYS.values(), *(card.keys() for card in cards))
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", section(REFERENCE.read_text(), "Model bundle"), re.M))
    missing = sorted(keys - rows)
    assert cards and not missing, (f"add a row `| `KEY` | required? | what it holds |` for {missing} to the card "
                                   "table of docs/reference.md, section '## Model bundle'")


def test_the_reference_names_every_jack_port():
    ports = re.findall(r"""register\(["']([^"']+)["']\)""", (ROOT / "waeserver/live/jack_client.py").read_text())
    named = section(REFERENCE.read_text(), "The live daemon: ports and defaults")
    missing = [p for p in ports if f"`{p}`" not in named]
    assert ports and not missing, (f"name the JACK ports {missing} (direction and use) in docs/reference.md, "
                                   "section '## The live daemon: ports and defaults'")


def test_nothing_points_outside_the_repository():
    """The user-facing contract is docs/reference.md; no doc or module sends a reader to a file they lack."""
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "patches").rglob("*.md"),
             *(ROOT / "waeserver").rglob("*.py")]
    outside = [f"{p.relative_to(ROOT)}:{n}" for p in files for n, line in enumerate(p.read_text().splitlines(), 1)
               if "../shared" in line or "CONTRACT.md" in line]
    assert not outside, f"pointers outside the repository (use docs/reference.md): {outside}"
