"""Each fact once: the pitch facts in dsp/pitch.py, YAML read through settings.py, one device picker,
one style one-hot, one velocity curve, the control limits and checks in live/controls.py. An AST
scan of the package, so that a second definition or a copied limit fails here."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import waeserver
from waeserver.dsp.pitch import NOTE_NAMES
from waeserver.live import controls

PACKAGE = Path(waeserver.__file__).parent

# function name: the one module that defines it (None: no module of the package does)
HOMES = {
    "midi_to_hz": "dsp/pitch.py", "midi_to_f0": "dsp/pitch.py", "hz_to_midi": "dsp/pitch.py",
    "octaves_from_a4": "dsp/pitch.py", "pitch_class": "dsp/pitch.py", "octave_of": "dsp/pitch.py",
    "note_name": "dsp/pitch.py", "octaves": None, "pitch_classes": None,
    "pick_device": "model/devices.py", "resolve_device": None,
    "style_onehot": "model/wae.py", "_style_onehot": None,
    "velocity_gain": "live/voices.py", "curve_exponent": "live/midi.py",
    "finite": "live/controls.py", "number": "live/controls.py", "whole": "live/controls.py",
    "in_range": "live/controls.py", "osc_int": None, "osc_float": None, "_number": None,
    "parse_target": "live/controls.py", "_check_target": None,
    "read_yaml": "settings.py", "read_mapping": "settings.py",
    "make_test_bundle": None,   # a test helper: tests/bundles.py
}
# module-level names that only their home may assign
CONSTANTS = {"N_PITCH_CLASSES": "dsp/pitch.py", "N_OCTAVES": "dsp/pitch.py", "NOTE_NAMES": "dsp/pitch.py",
             "A4_HZ": "dsp/pitch.py", "PITCH_CLASS_NAMES": None}
LIMITS = {name: getattr(controls, name) for name in ("STYLE_MAX", "GAIN_MAX", "RELEASE_MAX", "BEND_MAX", "Z_MAX",
                                                     "MIDI_MAX", "MIDI_CHANNELS", "POLYPHONY_MAX", "PORT_MAX",
                                                     "CURVE_MIN", "CURVE_MAX")}
CHECKS = ("whole", "number", "finite", "in_range")


@functools.cache
def modules() -> dict[str, ast.Module]:
    return {path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text(), str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def numbers(node: ast.AST) -> list[ast.Constant]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Constant) and type(n.value) in (int, float)]


def bound(node: ast.AST) -> ast.Constant | None:
    """A bound written as a number (``30.0``, ``-10.0``), not as a name or an expression."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return node if isinstance(node, ast.Constant) and type(node.value) in (int, float) else None


def test_each_function_is_defined_in_its_one_home():
    """Module-level functions (a method of the same name may call the one function)."""
    wrong = []
    for rel, tree in modules().items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in HOMES \
                    and HOMES[node.name] != rel:
                wrong.append(f"{rel}:{node.lineno} defines {node.name} (home: {HOMES[node.name] or 'none'})")
    assert not wrong, "; ".join(wrong)
    for name, home in HOMES.items():
        if home is not None:
            assert any(isinstance(n, ast.FunctionDef) and n.name == name for n in modules()[home].body), (name, home)


def test_pitch_facts_live_only_in_dsp_pitch():
    """No other module assigns the pitch constants, writes concert pitch (440) or the note names,
    or computes ``2 ** ((p - 69) / 12)`` itself."""
    names = set(NOTE_NAMES)
    wrong = []
    for rel, tree in modules().items():
        if rel == "dsp/pitch.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id in CONSTANTS:
                        wrong.append(f"{rel}:{node.lineno} assigns {target.id}")
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 440:
                wrong.append(f"{rel}:{node.lineno} writes 440")
            if isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) == 12 and \
                    {e.value for e in node.elts if isinstance(e, ast.Constant)} == names:
                wrong.append(f"{rel}:{node.lineno} lists the note names")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and \
                    isinstance(node.left, ast.Constant) and node.left.value == 2 and \
                    any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and isinstance(n.right, ast.Constant)
                        and n.right.value == 12 for n in ast.walk(node.right)):
                wrong.append(f"{rel}:{node.lineno} computes 2 ** (.../12)")
    assert not wrong, "; ".join(wrong)


def test_the_mel_scale_lives_only_in_dsp_spectral():
    """Slaney's constants (the 6.4 of its log step, 200/3 Hz a mel) are named once, in dsp/spectral.py."""
    wrong = []
    for rel, tree in modules().items():
        if rel == "dsp/spectral.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and type(node.value) is float and node.value in (6.4, 200.0 / 3):
                wrong.append(f"{rel}:{node.lineno} writes {node.value}")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.left, ast.Constant) \
                    and isinstance(node.right, ast.Constant) and (node.left.value, node.right.value) == (200.0, 3):
                wrong.append(f"{rel}:{node.lineno} writes 200 / 3")
    assert not wrong, "use MEL_* of waeserver.dsp.spectral: " + "; ".join(wrong)


def test_yaml_is_read_only_through_settings():
    wrong = []
    for rel, tree in modules().items():
        if rel == "settings.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("safe_load", "load", "full_load", "unsafe_load") \
                    and isinstance(node.value, ast.Name) and node.value.id == "yaml":
                wrong.append(f"{rel}:{node.lineno} yaml.{node.attr}")
    assert not wrong, "read YAML with waeserver.settings.read_yaml/read_mapping: " + "; ".join(wrong)


def test_control_limits_are_named_not_copied():
    """The bounds given to the checks in the configuration, the OSC table and MIDI are the names of
    live/controls.py wherever they are one of its limits, and no live module but controls.py writes
    127 (the MIDI data byte)."""
    tree = modules()
    wrong = []
    for rel in ("live/config.py", "live/osc.py", "live/midi.py"):
        for node in ast.walk(tree[rel]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CHECKS:
                for n in filter(None, map(bound, node.args[2:4])):
                    if n.value != 0 and any(n.value == v for v in LIMITS.values()):
                        name = next(k for k, v in LIMITS.items() if v == n.value)
                        wrong.append(f"{rel}:{n.lineno} writes {n.value!r} for {name}")
    for rel, module in tree.items():
        if rel.startswith("live/") and rel != "live/controls.py":
            wrong += [f"{rel}:{n.lineno} writes 127 (MIDI_MAX)" for n in numbers(module) if n.value == 127]
    assert not wrong, "; ".join(wrong)


def test_the_checks_keep_each_callers_words():
    """One family of checks, each caller's error class, the messages the OSC and config tests read."""

    class ConfigError(ValueError):   # as a caller's own class (waeserver.live.config has one)
        pass

    refused = controls.ControlError
    cases = [(lambda: controls.whole("60", "pitch", 0, 127), refused, "pitch must be an integer, got '60'"),
             (lambda: controls.whole(60.5, "pitch", 0, 127), refused, "pitch must be a whole number, got 60.5"),
             (lambda: controls.whole(2**40, "pitch", 0, 127), refused, "pitch 1099511627776 is out of range 0..127"),
             (lambda: controls.number(True, "gain", 0, 2.0), refused, "gain must be a number, got True"),
             (lambda: controls.number(float("nan"), "gain", 0, 2.0), refused, "gain must be finite, got nan"),
             (lambda: controls.number(3.0, "gain", 0.0, 2.0), refused, "gain 3 is out of range 0..2"),
             (lambda: controls.finite("x" * 99, "z", -1, 1), refused, "z must be a number, got a str"),
             (lambda: controls.number(2e6, "render_dir_mb", 1.0, 1e6, ConfigError), ConfigError,
              "render_dir_mb 2000000 is out of range 1..1000000")]
    for call, error, message in cases:
        try:
            call()
        except ValueError as exc:
            assert type(exc) is error and str(exc) == message
        else:
            raise AssertionError(f"no error for {message!r}")
    assert controls.whole(64.0, "velocity", 1, 127) == 64 and controls.number(1, "gain", 0, 2) == 1.0
