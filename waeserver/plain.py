"""Configs as plain data: dataclasses written to YAML and read back, refusing unknown keys."""

from __future__ import annotations

from dataclasses import fields


def from_plain(cls, data: dict, what: str):
    """``cls(**data)``, with a clear error naming any key ``cls`` does not have (``what``: its name)."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(sorted(unknown))}")
    return cls(**data)
