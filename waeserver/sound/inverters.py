"""The real-time inverters a bundle can carry, by kind, and how one is written to and read from disk.

Every inverter is ``module(logmel [B, M, F], f0 [B] Hz) -> waveform [B, F * hop]``:

    harmonic   one amplitude per harmonic plus shaped noise, frequency deviations (waeserver.sound.harmonic)
    mcnn       the MCNN of Arık et al.: ``excitation: false`` as in the paper, ``true`` the
               16-band source-filter MCNN shipped before the harmonic inverter (waeserver.sound.mcnn)

A trained inverter on disk is ``NAME.safetensors`` plus ``NAME.yaml`` (``kind`` and ``config``);
a folder written before kinds existed holds ``mcnn.safetensors`` and a bare MCNN config.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from waeserver.sound.harmonic import HarmonicConfig, HarmonicInverter
from waeserver.sound.mcnn import MCNN, MCNNConfig

KINDS: dict[str, tuple[type, type]] = {
    "harmonic": (HarmonicConfig, HarmonicInverter),
    "mcnn": (MCNNConfig, MCNN),
}
DEFAULT_KIND = "harmonic"
FILE_STEM = "inverter"


def build_inverter(kind: str, config: dict) -> nn.Module:
    """A new (untrained) inverter of ``kind`` from its plain config; ValueError for a bad one."""
    if kind not in KINDS:
        raise ValueError(f"unknown inverter kind {kind!r} (known: {', '.join(KINDS)})")
    config_cls, module_cls = KINDS[kind]
    return module_cls(config_cls.from_dict(dict(config)))


def new_inverter(kind: str, settings: dict) -> nn.Module:
    """A new inverter of ``kind`` with today's defaults for whatever ``settings`` leaves out (a
    config read back from disk goes through :func:`build_inverter`, which knows older defaults)."""
    from waeserver.settings import from_plain

    if kind not in KINDS:
        raise ValueError(f"unknown inverter kind {kind!r} (known: {', '.join(KINDS)})")
    config_cls, module_cls = KINDS[kind]
    return module_cls(from_plain(config_cls, dict(settings), f"{kind} inverter settings"))


def kind_of(module: nn.Module) -> str:
    for kind, (_, module_cls) in KINDS.items():
        if isinstance(module, module_cls):
            return kind
    raise TypeError(f"{type(module).__name__} is not an inverter")


def describe(module: nn.Module) -> dict:
    """``{"kind": ..., "config": {...}}``: what a card or a run folder records of an inverter."""
    return {"kind": kind_of(module), "config": module.cfg.to_dict()}


def save_inverter(module: nn.Module, folder: str | Path) -> Path:
    """``folder/inverter.safetensors`` and ``folder/inverter.yaml``; returns the weights' path."""
    import yaml
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{FILE_STEM}.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))
    path.with_suffix(".yaml").write_text(yaml.safe_dump(describe(module), sort_keys=False))
    return path


def load_inverter(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """An inverter written by :func:`save_inverter` (a folder or its ``.safetensors``), or an MCNN
    folder of before (``mcnn.safetensors`` plus its bare config)."""
    from safetensors.torch import load_file

    from waeserver.settings import read_yaml

    path = Path(path)
    if path.is_dir():
        path = inverter_files(path) or path / f"{FILE_STEM}.safetensors"
    if not path.is_file() or not path.with_suffix(".yaml").is_file():
        raise FileNotFoundError(f"no trained inverter at {path} (and {path.with_suffix('.yaml').name})")
    meta = read_yaml(path.with_suffix(".yaml"), "inverter description")
    if not isinstance(meta, dict):
        raise ValueError(f"{path.with_suffix('.yaml')}: not an inverter description")
    if "kind" not in meta:
        meta = {"kind": "mcnn", "config": meta}
    module = build_inverter(meta["kind"], meta.get("config") or {})
    module.load_state_dict(load_file(str(path)))
    return module.to(device).eval()


def inverter_files(folder: str | Path) -> Path | None:
    """The weights file of a trained inverter in ``folder``, or None."""
    folder = Path(folder)
    for stem in (FILE_STEM, "mcnn"):
        if (folder / f"{stem}.safetensors").is_file():
            return folder / f"{stem}.safetensors"
    return None
