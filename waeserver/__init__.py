"""waeserver: a neural instrument. A WAE-Fader learns orchestral notes; a real-time inverter turns
them into sound; a daemon plays them live through JACK from MIDI and OSC.

    import waeserver

    bundle = waeserver.load_bundle("gm-orchestra")                 # a checked, trained model
    style = bundle.style_weights({"clarinet": 0.5, "violin": 0.5})  # half clarinet, half violin
    wave = waeserver.generate_note(bundle, pitch=60, velocity=100, style=style)   # [T] at bundle.sample_rate
    notes = waeserver.NoteDataset("data/orchestra12")              # a dataset folder, for training

The layers, each importing only those before it: ``settings`` (configs as plain data), ``dsp``, ``data``,
``model``, ``sound``, ``live``, ``cli`` (docs/ARCHITECTURE.md). The names below load on first
use, so ``import waeserver`` does not pull in torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name: the module that holds it
API = {
    "load_bundle": "waeserver.sound.bundle", "Bundle": "waeserver.sound.bundle",
    "BundleError": "waeserver.sound.bundle",
    "generate_note": "waeserver.sound.generate", "transform": "waeserver.sound.transform",
    "NoteDataset": "waeserver.data.dataset", "render_dataset": "waeserver.data.soundfont",
    "import_library": "waeserver.data.user_samples",
    "WAE": "waeserver.model.wae", "ModelConfig": "waeserver.model.wae", "train": "waeserver.model.training",
    "evaluate": "waeserver.model.evaluation",
    "build_model": "waeserver.sound.pipeline",
    "ServeConfig": "waeserver.live.config", "Instrument": "waeserver.live.instrument",
    "Daemon": "waeserver.live.daemon", "render_song": "waeserver.live.offline",
}

__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name not in API:
        raise AttributeError(f"module 'waeserver' has no attribute {name!r}")
    value = getattr(importlib.import_module(API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
