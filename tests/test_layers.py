"""The package's shape: layers that import only downward, argparse only in the command line, an
instrument that never loads training code, and an ``import waeserver`` that does not load torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import waeserver

PACKAGE = Path(waeserver.__file__).parent
LAYERS = ("settings", "dsp", "data", "model", "sound", "live", "cli")
TRAINING = ("waeserver.model.training", "waeserver.model.losses", "waeserver.model.evaluation",
            "waeserver.model.training_run", "waeserver.sound.inverter_training", "waeserver.sound.finetune",
            "waeserver.sound.pipeline", "waeserver.sound.bench")


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("waeserver", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def imported(tree: ast.Module) -> set[str]:
    """Every module an import statement names, at the top or inside a function."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_is_in_a_layer_and_imports_only_its_own_or_lower_layers():
    upward = []
    for name, tree in modules().items():
        own = layer(name)
        if name in ("waeserver", "waeserver.__main__"):   # the lazy API and `python -m waeserver`
            continue
        assert own is not None, f"{name} is in no layer"
        for target in imported(tree):
            theirs = layer(target) if target.startswith("waeserver.") else None
            if theirs is not None and theirs > own:
                upward.append(f"{name} imports {target}")
    assert not upward, "imports against the layering: " + "; ".join(sorted(upward))


def test_only_the_command_line_uses_argparse():
    users = [name for name, tree in modules().items()
             if "argparse" in imported(tree) and layer(name) != LAYERS.index("cli")]
    assert not users, f"argparse outside waeserver.cli: {users}"
    assert any("argparse" in imported(tree) for name, tree in modules().items() if name.startswith("waeserver.cli"))


def test_the_instrument_never_loads_training_code():
    """The daemon and offline renderer imported, a shipped bundle loaded and an instrument built
    around it: no training module is in ``sys.modules``."""
    script = """
import sys
from waeserver.live import daemon, offline
from waeserver.live.config import validate
from waeserver.live.instrument import Instrument
from waeserver.sound.bundle import load_bundle
import tempfile
cfg = validate({"device": "cpu", "preset_dir": tempfile.mkdtemp(), "render_dir": tempfile.mkdtemp()})
inst = Instrument(load_bundle("gm-orchestra"), cfg, 48000)
assert inst.bundle.name
print(" ".join(sorted(m for m in sys.modules if m.startswith("waeserver"))))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    assert "waeserver.live.instrument" in loaded and "waeserver.sound.bundle" in loaded
    assert not loaded & set(TRAINING), f"training code loaded by the instrument: {sorted(loaded & set(TRAINING))}"


def test_import_waeserver_is_light_and_names_its_api():
    out = subprocess.run([sys.executable, "-c", "import sys, waeserver; print('torch' in sys.modules, "
                          "sorted(m for m in sys.modules if m.startswith('waeserver.')))"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("False []")
    for name, module in waeserver.API.items():
        assert getattr(sys.modules.get(module) or __import__(module, fromlist=[name]), name) is not None
    assert waeserver.load_bundle is sys.modules["waeserver.sound.bundle"].load_bundle
