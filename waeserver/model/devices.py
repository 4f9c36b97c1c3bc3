"""The one device picker: what ``--device`` and the ``device`` option mean, for training and playing alike.

torch is imported only to pick, so that the daemon's configuration can check a name without it.
"""

from __future__ import annotations

DEVICES = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """A device that is not one of :data:`DEVICES`, or CUDA asked for where there is none."""


def is_device_name(name) -> bool:
    """Whether ``name`` is one of :data:`DEVICES` (whether it is present is :func:`pick_device`'s to say)."""
    return isinstance(name, str) and (name in ("auto", "cpu", "cuda") or name.startswith("cuda:"))


def pick_device(device="auto", local_rank: int = 0):
    """A :class:`torch.device` for a name of :data:`DEVICES` (or a torch.device, taken as it is).

    ``auto`` takes CUDA when present; plain ``cuda`` is the process's own GPU (``local_rank`` under
    torchrun, else the first).
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if not is_device_name(device):
        raise DeviceError(f"unknown device {device!r}: {DEVICES}")
    name = device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name} asked for, but CUDA is not available")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    return torch.device(name)
