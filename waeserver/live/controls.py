"""The performer's controls: style faders, latent point, z mode, gain, release and bend range.

:class:`ControlState` is shared by the OSC server, the MIDI control thread, presets and the
renderer. Every setter validates first and changes nothing when it raises :class:`ControlError`
(whose message is what ``/fail`` carries). The C audio thread never sees it: the instrument copies
``gain``, ``release`` and ``bend_range`` into the voice pool's parameters after each change.

The limits of every control and MIDI value, and the checks that hold input to them, are here
once: the configuration, the OSC table and MIDI use them, each with its own error class.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import numpy as np

STYLE_MAX = 2.0     # faders run 0..2; above 1 over-drives the style
GAIN_MAX = 2.0
RELEASE_MAX = 30.0  # seconds
BEND_MAX = 48.0     # semitones
Z_MAX = 10.0        # |z| per dimension; the prior is a unit Gaussian
Z_MODES = ("fixed", "per-note")
TARGETS = ("style:NAME", "z:N", "gain", "release", "bend_range")   # what a MIDI CC can be bound to
MIDI_MAX = 127      # a MIDI data byte: pitch, velocity, controller number or value, program
CURVE_MIN, CURVE_MAX = 0.1, 10.0   # velocity curve exponents: gain = (velocity / MIDI_MAX) ** exponent
MIDI_CHANNELS = 16
POLYPHONY_MAX = 256
PORT_MAX = 65535    # UDP


class ControlError(ValueError):
    """A refused control change; the message is sent back with ``/fail``."""


def _shown(x) -> str:
    """A number as the messages show it: whole ones without a point, others to 6 digits."""
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:g}"


def _got(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def in_range(v, what: str, low, high, error: type[Exception] = ControlError):
    """``v`` if ``low <= v <= high``, else ``error`` ("what v is out of range low..high")."""
    if not low <= v <= high:
        raise error(f"{what} {_shown(v)} is out of range {_shown(low)}..{_shown(high)}")
    return v


def finite(value, what: str, low: float, high: float, error: type[Exception] = ControlError) -> float:
    """``value`` (anything ``float()`` reads: presets, controller positions) as a finite float within
    ``[low, high]``, or ``error``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise error(f"{what} must be a number, got {_got(value)}") from None
    if not math.isfinite(v):
        raise error(f"{what} must be finite, got {v}")
    return in_range(v, what, low, high, error)


def number(value, what: str, low: float, high: float, error: type[Exception] = ControlError) -> float:
    """A number given as one (an int or a float, not a bool or a string: OSC arguments, config
    values) as a finite float within ``[low, high]``, or ``error``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{what} must be a number, got {_got(value)}")
    return finite(value, what, low, high, error)


def whole(value, what: str, low: int, high: int, error: type[Exception] = ControlError) -> int:
    """An integer given as one (a whole float passes; not a bool or a string) within ``[low, high]``,
    or ``error``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{what} must be an integer, got {_got(value)}")
    if isinstance(value, float) and not value.is_integer():
        raise error(f"{what} must be a whole number, got {value}")
    return in_range(int(value), what, low, high, error)


def parse_target(target: str) -> tuple[str, str]:
    """``(kind, argument)`` of a CC target written as one of :data:`TARGETS`, or :class:`ControlError`
    (whether this model has the style or latent dimension is :meth:`ControlState.check_target`'s)."""
    kind, _, arg = target.partition(":")
    if (kind in ("gain", "release", "bend_range") and not arg) or (kind == "style" and arg) or \
            (kind == "z" and arg.isdigit()):
        return kind, arg
    raise ControlError(f"unknown target {target!r} ({', '.join(TARGETS)})")


class ControlState:
    """Style faders ``[S]``, latent point ``[D]`` and the playing parameters of one instrument.

    ``listeners`` are called with ``(key, values)`` after every accepted change, outside the lock:
    ``key`` names what changed (``"styles"``, ``"z"``, ``"z_mode"``, ``"gain"``, ``"release"``,
    ``"bend_range"``) and ``values`` is the new value as a list of OSC-friendly items.
    """

    def __init__(self, styles: Sequence[str], latent_size: int, gain: float = 1.0, release: float = 0.3,
                 bend_range: float = 2.0):
        self.lock = threading.Lock()
        self.style_names = list(styles)
        self.styles = np.zeros(len(self.style_names), np.float32)
        self.styles[0] = 1.0
        self.z = np.zeros(latent_size, np.float32)
        self.z_mode = "fixed"
        self.gain = finite(gain, "gain", 0.0, GAIN_MAX)
        self.release = finite(release, "release", 0.0, RELEASE_MAX)
        self.bend_range = finite(bend_range, "bend range", 0.0, BEND_MAX)
        self.listeners: list[Callable[[str, list], None]] = []

    @property
    def latent_size(self) -> int:
        return len(self.z)

    def _changed(self, key: str, values: list) -> None:
        for listener in self.listeners:
            listener(key, values)

    def style_index(self, name: str) -> int:
        try:
            return self.style_names.index(name)
        except ValueError:
            raise ControlError(f"unknown style {name!r} (styles: {', '.join(self.style_names)})") from None

    # --- faders and latent point -------------------------------------------------------------
    def set_style(self, name: str, value) -> None:
        i = self.style_index(name)
        v = finite(value, f"style {name}", 0.0, STYLE_MAX)
        with self.lock:
            styles = self.styles.copy()
            styles[i] = v
            self.styles = styles
        self._changed("styles", styles.tolist())

    def set_styles(self, values: Sequence) -> None:
        if len(values) != len(self.style_names):
            raise ControlError(f"expected {len(self.style_names)} fader values "
                               f"({', '.join(self.style_names)}), got {len(values)}")
        styles = np.array([finite(v, f"style {n}", 0.0, STYLE_MAX) for n, v in zip(self.style_names, values)],
                          np.float32)
        with self.lock:
            self.styles = styles
        self._changed("styles", styles.tolist())

    def set_mix(self, weights: dict) -> None:
        """Set the named faders and every other one to 0."""
        styles = np.zeros(len(self.style_names), np.float32)
        for name, w in weights.items():
            styles[self.style_index(name)] = finite(w, f"style {name}", 0.0, STYLE_MAX)
        with self.lock:
            self.styles = styles
        self._changed("styles", styles.tolist())

    def set_z(self, values: Sequence) -> None:
        if len(values) != self.latent_size:
            raise ControlError(f"expected {self.latent_size} latent values, got {len(values)}")
        z = np.array([finite(v, f"z[{i}]", -Z_MAX, Z_MAX) for i, v in enumerate(values)], np.float32)
        with self.lock:
            self.z = z
        self._changed("z", z.tolist())

    def random_z(self, seed: int | None = None) -> None:
        z = np.random.default_rng(seed).standard_normal(self.latent_size).astype(np.float32)
        self.set_z(np.clip(z, -Z_MAX, Z_MAX).tolist())

    def set_z_mode(self, mode: str) -> None:
        if mode not in Z_MODES:
            raise ControlError(f"z mode must be one of {', '.join(Z_MODES)}, got {mode!r}")
        self.z_mode = mode
        self._changed("z_mode", [mode])

    # --- playing parameters ------------------------------------------------------------------
    def set_gain(self, value) -> None:
        self.gain = finite(value, "gain", 0.0, GAIN_MAX)
        self._changed("gain", [self.gain])

    def set_release(self, value) -> None:
        self.release = finite(value, "release", 0.0, RELEASE_MAX)
        self._changed("release", [self.release])

    def set_bend_range(self, value) -> None:
        self.bend_range = finite(value, "bend range", 0.0, BEND_MAX)
        self._changed("bend_range", [self.bend_range])

    def set_target(self, target: str, unit: float) -> None:
        """Set a CC-mappable ``target`` from a controller position ``unit`` in 0..1.

        Targets: ``style:NAME`` (0..1; over-drive is for OSC), ``gain`` (0..2), ``release``
        (0..5 s), ``bend_range`` (0..24), ``z:N`` (-3..3).
        """
        kind, arg = parse_target(target)
        if kind == "style":
            self.set_style(arg, unit)
        elif kind == "gain":
            self.set_gain(unit * GAIN_MAX)
        elif kind == "release":
            self.set_release(unit * 5.0)
        elif kind == "bend_range":
            self.set_bend_range(round(unit * 24.0))
        else:
            z = self.z.tolist()
            z[int(arg)] = (unit * 2.0 - 1.0) * 3.0
            self.set_z(z)

    def check_target(self, target: str) -> str:
        """``target`` if it names something :meth:`set_target` can set, else :class:`ControlError`."""
        kind, arg = parse_target(target)
        if kind == "style":
            self.style_index(arg)
        elif kind == "z" and int(arg) >= self.latent_size:
            raise ControlError(f"latent target {target!r} must be z:0..z:{self.latent_size - 1}")
        return target

    # --- snapshots (presets, model swaps) ----------------------------------------------------
    def snapshot(self) -> dict:
        """Every control as plain data; faders by style name."""
        with self.lock:
            return {"styles": {n: float(v) for n, v in zip(self.style_names, self.styles)},
                    "z": [float(v) for v in self.z], "z_mode": self.z_mode, "gain": self.gain,
                    "release": self.release, "bend_range": self.bend_range}

    def restore(self, snap: dict) -> None:
        """Recall a :meth:`snapshot`; validates everything before changing anything.

        Faders are matched by name (styles this model lacks are left out, the others go to 0); a
        latent point of another size is kept as it is.
        """
        if not isinstance(snap, dict):
            raise ControlError("a snapshot must be a mapping")
        faders = snap.get("styles", {})
        if not isinstance(faders, dict):
            raise ControlError("snapshot styles must be a mapping of name to value")
        known = {n: w for n, w in faders.items() if n in self.style_names}
        if faders and not known:
            raise ControlError(f"none of the styles {', '.join(map(str, faders))} is in this model")
        styles = np.zeros(len(self.style_names), np.float32)
        for name, w in known.items():
            styles[self.style_names.index(name)] = finite(w, f"style {name}", 0.0, STYLE_MAX)
        z = snap.get("z", self.z.tolist())
        if not isinstance(z, (list, tuple)):
            raise ControlError("snapshot z must be a list")
        z = np.array([finite(v, f"z[{i}]", -Z_MAX, Z_MAX) for i, v in enumerate(z)], np.float32)
        z_mode = snap.get("z_mode", self.z_mode)
        if z_mode not in Z_MODES:
            raise ControlError(f"z mode must be one of {', '.join(Z_MODES)}, got {z_mode!r}")
        gain = finite(snap.get("gain", self.gain), "gain", 0.0, GAIN_MAX)
        release = finite(snap.get("release", self.release), "release", 0.0, RELEASE_MAX)
        bend = finite(snap.get("bend_range", self.bend_range), "bend range", 0.0, BEND_MAX)
        with self.lock:
            if faders:
                self.styles = styles
            if len(z) == self.latent_size:
                self.z = z
            self.z_mode, self.gain, self.release, self.bend_range = z_mode, gain, release, bend
        for key in ("styles", "z"):
            self._changed(key, getattr(self, key).tolist())
        for key in ("z_mode", "gain", "release", "bend_range"):
            self._changed(key, [getattr(self, key)])

    def rebind(self, styles: Sequence[str], latent_size: int) -> None:
        """Follow a new model: faders matched by name (the first style at 1 when none match), the
        latent point kept when the sizes agree, else the origin."""
        styles = list(styles)
        with self.lock:
            old = dict(zip(self.style_names, self.styles.tolist()))
            faders = np.array([old.get(n, 0.0) for n in styles], np.float32)
            if not faders.any():
                faders[0] = 1.0
            z = self.z if len(self.z) == latent_size else np.zeros(latent_size, np.float32)
            self.style_names, self.styles, self.z = styles, faders, z
        self._changed("styles", faders.tolist())
        self._changed("z", z.tolist())
