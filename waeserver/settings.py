"""Settings as plain data: dataclasses from YAML mappings, refusing unknown keys; YAML read with one clear error."""

from __future__ import annotations

from dataclasses import fields


def from_plain(cls, data: dict, what: str):
    """``cls(**data)``, with a clear error naming any key ``cls`` does not have (``what``: its name)."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(sorted(unknown))}")
    return cls(**data)


def read_yaml(path, what: str, error: type[Exception] = ValueError):
    """The YAML document at ``path`` (``yaml.safe_load``), or one clear line naming ``what`` it is.

    An unreadable file raises ``error`` (OSError keeps its type when ``error`` is ValueError,
    so callers can tell a missing file from a bad one); a file that is not UTF-8 text or not
    valid YAML raises ``error``.
    """
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        cls = OSError if error is ValueError else error
        raise cls(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise error(f"cannot read {what} {path}: not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None


def read_mapping(path, what: str, error: type[Exception] = ValueError) -> dict:
    """A YAML file of ``key: value`` settings (empty file: ``{}``); anything else is ``error``."""
    data = read_yaml(path, what, error)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {path} must be a mapping of setting: value")
    return data
