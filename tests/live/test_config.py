"""The daemon's YAML config and flags, and the preset store's atomic saves."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from waeserver.cli.serve import add_config_flags, config_of
from waeserver.live.config import ConfigError, ServeConfig, read_config, validate
from waeserver.live.presets import PresetError, PresetStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return parser.parse_args(argv)


def resolve(*argv: str) -> ServeConfig:
    """The config ``waeserver serve ARGV`` would run with."""
    return config_of(parse(*argv))


def test_defaults_follow_the_contract():
    cfg = resolve()
    assert (cfg.osc_host, cfg.osc_port, cfg.jack_name, cfg.polyphony, cfg.bend_range) == \
        ("127.0.0.1", 57130, "waeserver", 32, 2.0)
    assert cfg.model == "gm-orchestra" and cfg.device == "auto" and cfg.midi_channel == 0


def test_example_config_is_valid_and_flags_win(tmp_path):
    cfg = resolve("--config", str(EXAMPLES / "config.yaml"), "--osc-port", "9001", "--cc", "1=style:oboe",
                  "--no-jack-connect", "--release", "1.5")
    assert cfg.osc_port == 9001 and cfg.cc_map == {1: "style:oboe"} and cfg.jack_connect is False
    assert cfg.release == 1.5
    example = yaml.safe_load((EXAMPLES / "config.yaml").read_text())
    assert resolve("--config", str(EXAMPLES / "config.yaml")).cc_map == example["cc_map"]


def test_every_option_has_a_flag():
    flags = vars(parse())
    assert {f for f in ServeConfig.__dataclass_fields__} <= set(flags)


@pytest.mark.parametrize("values, message", [
    ({"osc_port": 70000}, "osc_port 70000 is out of range"),
    ({"osc_port": "57130"}, "osc_port must be an integer"),
    ({"osc_host": "localhost:1"}, "osc_host must be an IP address"),
    ({"osc_allow": ["10.0.0.300"]}, "is not an IP address"),
    ({"polyphony": 0}, "polyphony 0 is out of range"),
    ({"polyphony": 2.5}, "polyphony must be a whole number, got 2.5"),
    ({"release": float("nan")}, "release must be finite, got nan"),
    ({"release": 31}, "release 31 is out of range 0..30"),
    ({"render_dir_mb": 2e6}, "render_dir_mb 2000000 is out of range 1..1000000"),
    ({"midi_channel": 17}, "midi_channel 17"),
    ({"velocity_curve": "loud"}, "velocity curve"),
    ({"cc_map": {1: "volume"}}, "unknown target 'volume'"),
    ({"cc_map": {200: "gain"}}, "200 is out of range"),
    ({"programs": ["3"]}, "expected N=NAME"),
    ({"device": "tpu"}, "device must be"),
    ({"jack_connect": "yes"}, "jack_connect must be true or false"),
    ({"polyfony": 8}, "unknown option 'polyfony'"),
])
def test_bad_values_are_refused_by_name(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(values)


def test_bad_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("osc_port: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_config(listing)
    with pytest.raises(ConfigError, match="cannot read config"):
        read_config(tmp_path / "missing.yaml")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("polyphony: -1\n")
    with pytest.raises(ConfigError, match=f"polyphony -1 is out of range.* in {wrong}"):
        resolve("--config", str(wrong))


def test_serve_with_a_bad_config_says_one_line_and_exits(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("osc_port: 0\n")
    result = subprocess.run([sys.executable, "-m", "waeserver", "serve", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"waeserver: error: osc_port 0 is out of range 1..65535 in {bad}"]


def test_presets_save_list_load(tmp_path):
    store = PresetStore(tmp_path / "presets")
    assert store.list() == []
    store.save("warm", {"gain": 0.5, "styles": {"piano": 1.0}})
    store.save("7", {"gain": 1.0})
    assert store.list() == ["7", "warm"]
    assert store.load("warm") == {"gain": 0.5, "styles": {"piano": 1.0}}
    for bad in ("../x", "", ".hidden", "a/b", "x" * 80):
        with pytest.raises(PresetError, match="bad preset name"):
            store.save(bad, {})
    with pytest.raises(PresetError, match="no preset named 'cold'"):
        store.load("cold")


def test_a_crash_mid_save_keeps_the_old_preset(tmp_path, monkeypatch):
    store = PresetStore(tmp_path)
    store.save("live", {"gain": 0.25})

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        store.save("live", {"gain": 2.0})
    monkeypatch.undo()
    assert store.load("live") == {"gain": 0.25}
    assert [p.name for p in tmp_path.iterdir()] == ["live.yaml"]


def test_a_killed_writer_never_leaves_a_torn_preset(tmp_path):
    """Kill a process that saves in a loop; the preset is always whole, and leftovers are ignored."""
    code = ("import sys; from waeserver.live.presets import PresetStore\n"
            "s = PresetStore(sys.argv[1]); i = 0\n"
            "while True:\n    s.save('loop', {'i': i, 'pad': 'x' * 50000}); i += 1\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
    try:
        store = PresetStore(tmp_path)
        while not (tmp_path / "loop.yaml").exists():
            assert proc.poll() is None
        for _ in range(20):
            data = store.load("loop")
            assert data["pad"] == "x" * 50000
    finally:
        proc.kill()
        proc.wait()
    (tmp_path / ".loop.abc.tmp").write_text("torn")
    assert store.list() == ["loop"] and store.load("loop")["pad"] == "x" * 50000
