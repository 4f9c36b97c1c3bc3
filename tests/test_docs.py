"""The documentation held to the code and the tree: docs/reference.md's generated tables current and
its hand-written parts naming what the code has, no pointer outside the repository, every link resolving."""

from __future__ import annotations

import difflib
import fnmatch
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


def test_the_reference_names_every_cc_target():
    from waeserver.live.controls import TARGETS

    named = section(REFERENCE.read_text(), "MIDI")
    missing = [t for t in TARGETS if f"`{t}`" not in named]
    assert not missing, (f"name the CC targets {missing} (and the range a controller spans) in docs/reference.md, "
                         "section '## MIDI'")


def test_nothing_points_outside_the_repository():
    """The user-facing contract is docs/reference.md; no doc or module sends a reader to a file they lack."""
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "patches").rglob("*.md"),
             *(ROOT / "waeserver").rglob("*.py")]
    outside = [f"{p.relative_to(ROOT)}:{n}" for p in files for n, line in enumerate(p.read_text().splitlines(), 1)
               if "../shared" in line or "CONTRACT.md" in line]
    assert not outside, f"pointers outside the repository (use docs/reference.md): {outside}"


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "patches").rglob("README.md"))]


def prose(text: str) -> str:
    """Markdown without its fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """The #anchors GitHub gives the headings of a markdown file."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


def test_every_link_in_the_docs_resolves_inside_the_repository():
    broken = []
    for doc in markdown_files():
        targets = re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose(doc.read_text()))
        targets += re.findall(r"^\[[^\]]+\]:\s*(\S+)", prose(doc.read_text()), re.M)
        for target in targets:
            if re.match(r"[a-z]+:", target):   # http(s), mailto: out of scope
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            where = f"{doc.relative_to(ROOT)}: {target}"
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{where} (no such file in the repository)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{where} (no heading #{anchor} in {path.relative_to(ROOT)})")
    assert not broken, "broken links: " + "; ".join(broken)


def test_every_repository_path_the_docs_name_exists():
    """A path in code spans (`waeserver/live/_voices.c`, `results/x.json`, a glob) names something in
    the tree, and so does a module's file name (`losses.py`); placeholders in capitals (`models/NAME/`)
    are left alone."""
    missing = []
    files = {p.name for folder in ("waeserver", "benchmarks", "examples", "tests", "patches")
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".c")} | {"setup.py"}
    for doc in markdown_files():
        for path in re.findall(r"`((?:waeserver|benchmarks|examples|patches|tests|docs|models|results)/[\w./*{},-]+)`",
                               doc.read_text()):
            if re.search(r"\b[A-Z]{2,}\b|[{}]", path):
                continue
            path = f"benchmarks/{path}" if path.startswith("results/") else path   # as benchmarks/*.py write it
            if not (any(ROOT.glob(path.rstrip("/"))) if "*" in path else (ROOT / path).exists()):
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
        for name in re.findall(r"`(\w+\.(?:py|c))`", doc.read_text()):
            if name not in files:
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not missing, f"the docs name paths that are not in the repository: {missing}"


def test_the_architecture_names_every_module_and_only_modules_that_exist():
    """docs/ARCHITECTURE.md's per-layer tables against the tree: a ``### `waeserver/LAYER/` `` heading,
    then rows whose first cell names that folder's modules (without ``.py``; C files with their suffix)."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    named, folder = set(), None
    for line in text[text.index("## Layers"):].splitlines():
        if line.startswith("## ") and not line.startswith("## Layers"):
            break
        if line.startswith("### "):
            match = re.search(r"`waeserver/([a-z_]*)/?`", line)
            folder = match[1] if match else None
        elif folder is not None and (cell := re.match(r"^\| ([^|]+) \|", line)):
            for name in re.findall(r"`([\w.]+)`", cell[1]):
                named.add(f"{folder}/{name}".lstrip("/") + ("" if "." in name else ".py"))
    package = ROOT / "waeserver"
    modules = {p.relative_to(package).as_posix() for ext in ("*.py", "*.c") for p in package.rglob(ext)
               if p.name not in ("__init__.py", "__main__.py")}
    assert not modules - named, (f"add a row `| `NAME` | what it holds |` for {sorted(modules - named)} to the "
                                 "table of its layer in docs/ARCHITECTURE.md")
    assert not named - modules, f"docs/ARCHITECTURE.md names modules that do not exist: {sorted(named - modules)}"


def test_every_benchmark_result_is_cited():
    """benchmarks/results/ keeps only what the docs, the benchmark scripts or the bundles' cards cite,
    by name or by a glob (``gm-*-cpu-2threads.json``)."""
    sources = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").glob("*.py"),
               *(ROOT / "models").glob("*/card.yaml")]
    cited = {token for p in sources for token in re.findall(r"[\w*.{},-]+\.(?:json|csv|txt|png)", p.read_text())
             if len(token.split("*")[0]) >= 3}
    results = sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir())
    uncited = [name for name in results if not any(fnmatch.fnmatch(name, token) for token in cited)]
    assert results and not uncited, (f"benchmarks/results/ holds files no doc cites: {uncited}; cite each in the "
                                     "docs where its figures are (docs/measurements.md for the daemon's) or git rm it")
