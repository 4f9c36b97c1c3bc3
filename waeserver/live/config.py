"""The daemon's configuration: a YAML file whose every option is also a command-line flag.

Precedence: built-in defaults, then the file given with ``--config``, then flags. Every value is
checked before anything starts; a bad one is a :class:`ConfigError` naming the option and where
it came from. The options and their defaults are :class:`ServeConfig`'s fields, their meaning
:data:`HELP` (docs/reference.md's table of them is generated from both).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields
from pathlib import Path

from waeserver.live.controls import (
    BEND_MAX,
    GAIN_MAX,
    MIDI_CHANNELS,
    MIDI_MAX,
    POLYPHONY_MAX,
    PORT_MAX,
    RELEASE_MAX,
    TARGETS,
    ControlError,
    number,
    parse_target,
    whole,
)
from waeserver.live.midi import curve_exponent
from waeserver.model.devices import DEVICES, is_device_name
from waeserver.settings import read_mapping


class ConfigError(ValueError):
    """A bad configuration value or file."""


@dataclass
class ServeConfig:
    """Every option of ``waeserver serve`` (and the instrument options of ``waeserver render``)."""

    model: str = "gm-orchestra"
    device: str = "auto"
    osc_host: str = "127.0.0.1"
    osc_port: int = 57130
    osc_allow: list[str] = field(default_factory=list)
    jack_name: str = "waeserver"
    jack_server: str | None = None
    jack_connect: bool = True
    midi_inputs: list[str] = field(default_factory=list)
    midi_channel: int = 0
    cc_map: dict[int, str] = field(default_factory=dict)
    programs: dict[int, str] = field(default_factory=dict)
    velocity_curve: str = "linear"
    polyphony: int = 32
    release: float = 0.3
    bend_range: float = 2.0
    gain: float = 1.0
    latency_budget_ms: float = 10.0
    render_batch: int = 8
    priority_process: bool = True
    fader_jitter: float = 0.01
    preset_dir: str = "~/.local/share/waeserver/presets"
    render_dir: str = "~/.local/share/waeserver/renders"
    render_dir_mb: float = 200.0


HELP = {
    "model": "bundle folder or name under models/",
    "device": "auto (CUDA when present), cpu, cuda or cuda:N",
    "osc_host": "OSC listening address (127.0.0.1; 0.0.0.0 for every interface)",
    "osc_port": "OSC UDP port",
    "osc_allow": "client address allowed to send OSC (repeat; default: any)",
    "jack_name": "JACK client name",
    "jack_server": "JACK server name (default $JACK_DEFAULT_SERVER or the default server)",
    "jack_connect": "connect out_1/out_2 to the first two system playback ports",
    "midi_inputs": "hardware MIDI input by name, glob or substring (repeat)",
    "midi_channel": f"MIDI channel 1..{MIDI_CHANNELS}, or 0 for every channel",
    "cc_map": f"controller to target, CC=TARGET with TARGET {', '.join(TARGETS[:-1])} or {TARGETS[-1]} (repeat)",
    "programs": "program change to preset name, N=NAME (repeat; default: the preset named N)",
    "velocity_curve": "linear, soft, hard, or an exponent: gain = (velocity/127) ** exponent",
    "polyphony": "voices",
    "release": "release time in seconds",
    "bend_range": "pitch-bend range in semitones",
    "gain": f"master gain 0..{GAIN_MAX:g}",
    "latency_budget_ms": "how long a note may wait for a fresh render before a stand-in plays",
    "render_batch": "notes per refill batch",
    "priority_process": "render the notes that wait in a process of their own, never behind a refill "
                        "(a second copy of the model in memory)",
    "fader_jitter": "fader or latent change that leaves cached renders fresh",
    "preset_dir": "preset folder",
    "render_dir": "folder of /wae/render's note files",
    "render_dir_mb": "most megabytes of note files render_dir holds; the oldest are removed past it",
}


def _pair_map(value, option: str, target_type) -> dict[int, str]:
    """``{int: str}`` from a mapping or from ``["N=NAME", ...]`` (flags)."""
    if isinstance(value, list):
        items = {}
        for item in value:
            key, sep, name = str(item).partition("=")
            if not sep:
                raise ConfigError(f"{option}: expected N=NAME, got {item!r}")
            items[key.strip()] = name.strip()
        value = items
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a mapping of number to name")
    out = {}
    for key, name in value.items():
        try:
            n = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"{option}: {key!r} is not a number") from None
        whole(n, f"{option}:", 0, MIDI_MAX, ConfigError)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{option}: {n} needs a name, got {name!r}")
        out[n] = target_type(name)
    return out


def _cc_target(target: str) -> str:
    """A target of the right form; whether the model has it is checked once it is loaded."""
    try:
        parse_target(target)
    except ControlError as exc:
        raise ConfigError(f"cc_map: {exc}") from None
    return target


def validate(values: dict) -> ServeConfig:
    """A :class:`ServeConfig` from a mapping of option values, every one checked."""
    known = {f.name for f in fields(ServeConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} (options: {', '.join(sorted(known))})")
    cfg = ServeConfig()
    for key, value in values.items():
        setattr(cfg, key, value)
    for key in ("model", "device", "osc_host", "jack_name", "preset_dir", "render_dir"):
        if not isinstance(getattr(cfg, key), str) or not getattr(cfg, key):
            raise ConfigError(f"{key} must be a non-empty string")
    if cfg.jack_server is not None and (not isinstance(cfg.jack_server, str) or not cfg.jack_server):
        raise ConfigError("jack_server must be a name")
    for key in ("jack_connect", "priority_process"):
        if not isinstance(getattr(cfg, key), bool):
            raise ConfigError(f"{key} must be true or false")
    if not is_device_name(cfg.device):
        raise ConfigError(f"device must be {DEVICES}, got {cfg.device!r}")
    try:
        ipaddress.ip_address(cfg.osc_host)
    except ValueError:
        raise ConfigError(f"osc_host must be an IP address, got {cfg.osc_host!r}") from None
    cfg.osc_port = whole(cfg.osc_port, "osc_port", 1, PORT_MAX, ConfigError)
    for key in ("osc_allow", "midi_inputs"):
        value = getattr(cfg, key)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{key} must be a list of strings")
    for addr in cfg.osc_allow:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(f"osc_allow: {addr!r} is not an IP address") from None
    cfg.midi_channel = whole(cfg.midi_channel, "midi_channel", 0, MIDI_CHANNELS, ConfigError)
    cfg.cc_map = _pair_map(cfg.cc_map, "cc_map", _cc_target)
    cfg.programs = _pair_map(cfg.programs, "programs", str)
    try:
        curve_exponent(cfg.velocity_curve)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    cfg.polyphony = whole(cfg.polyphony, "polyphony", 1, POLYPHONY_MAX, ConfigError)
    cfg.release = number(cfg.release, "release", 0.0, RELEASE_MAX, ConfigError)
    cfg.bend_range = number(cfg.bend_range, "bend_range", 0.0, BEND_MAX, ConfigError)
    cfg.gain = number(cfg.gain, "gain", 0.0, GAIN_MAX, ConfigError)
    cfg.latency_budget_ms = number(cfg.latency_budget_ms, "latency_budget_ms", 0.0, 1000.0, ConfigError)
    cfg.render_batch = whole(cfg.render_batch, "render_batch", 1, 128, ConfigError)
    cfg.fader_jitter = number(cfg.fader_jitter, "fader_jitter", 0.0, 0.5, ConfigError)
    cfg.render_dir_mb = number(cfg.render_dir_mb, "render_dir_mb", 1.0, 1e6, ConfigError)
    return cfg


def read_config(path: str | Path) -> dict:
    """The option values of a YAML config file (not yet validated)."""
    data = read_mapping(Path(path), "config", ConfigError)
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve(config: str | Path | None = None, flags: dict | None = None) -> ServeConfig:
    """Defaults, then the ``config`` file, then ``flags`` (option: value; None means not given)."""
    values = read_config(config) if config else {}
    where = f" in {config}" if config else ""
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = value
    try:
        return validate(values)
    except ConfigError as exc:
        raise ConfigError(f"{exc}{where}") from None
