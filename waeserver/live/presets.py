"""Presets: named snapshots of every control, one YAML file each in a folder.

A save writes a temporary file in the same folder, flushes it to disk, then renames it over the
old one (``os.replace`` is atomic on POSIX), so a crash at any moment leaves either the old preset
or the new one, never a torn file. Temporary files a crash leaves behind are ignored.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml

from waeserver.settings import read_yaml

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PresetError(ValueError):
    """A bad preset name, a missing preset or an unreadable file."""


def check_name(name: str, what: str = "preset") -> str:
    """``name`` if it is a good file name for a preset (or a render, ``/wae/render``): no path
    separator, no leading dot, nothing a folder could be escaped with."""
    if not isinstance(name, str) or not NAME.match(name) or name.endswith(".tmp"):
        raise PresetError(f"bad {what} name {name!r}: letters, digits, _ . - (up to 64), "
                          "starting with a letter or digit")
    return name


class PresetStore:
    """Presets in ``folder`` (created on the first save)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()

    def path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.yaml"

    def save(self, name: str, snapshot: dict) -> Path:
        """Write ``snapshot`` as preset ``name`` atomically; returns its path."""
        path = self.path(name)
        text = yaml.safe_dump(snapshot, sort_keys=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        return path

    def load(self, name: str) -> dict:
        path = self.path(name)
        if not path.is_file():
            raise PresetError(f"no preset named {name!r} in {self.folder}")
        data = read_yaml(path, "preset", PresetError)
        if not isinstance(data, dict):
            raise PresetError(f"preset {name!r} is not a mapping")
        return data

    def list(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.yaml") if NAME.match(p.stem))
