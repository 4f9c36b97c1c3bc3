"""A random bundle for the tests of every layer: ``from bundles import make_test_bundle``.

tests/ is on ``sys.path`` because pytest puts the folder of the root conftest.py there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from waeserver.dsp.spectral import SpectralConfig
from waeserver.model.wae import Decoder, Encoder, ModelConfig
from waeserver.sound.bundle import save_bundle
from waeserver.sound.harmonic import HarmonicConfig, HarmonicInverter
from waeserver.sound.mcnn import MCNN, MCNNConfig


def make_test_bundle(path: str | Path, styles=("piano", "flute", "violin"), latent: int = 3,
                     sample_rate: int = 22050, seed: int = 0, encoder: bool = True) -> Path:
    """A small random-initialised bundle: real encoder (unless left out), decoder and inverters
    (harmonic, the default, and a source-filter MCNN), tiny widths, pitches 36..96 (about 170 kB)."""
    torch.manual_seed(seed)
    spectral = SpectralConfig(sample_rate=sample_rate, f_max=sample_rate / 2)
    model_cfg = ModelConfig(n_mels=spectral.n_mels, n_frames=spectral.n_frames, latent=latent,
                            n_styles=len(styles), enc_channels=16, dec_channels=16, embed_dim=8,
                            hidden=32, mel_offset=-6.0, mel_scale=3.0)
    common = {"n_mels": spectral.n_mels, "hop_length": spectral.hop_length, "sample_rate": sample_rate,
              "mel_offset": -6.0, "mel_scale": 3.0}
    inverters = {
        "harmonic": HarmonicInverter(HarmonicConfig(**common, f_min=spectral.f_min, f_max=spectral.f_max,
                                                    analysis_fft=spectral.n_fft, hidden=8, max_harmonics=32)),
        "mcnn": MCNN(MCNNConfig(**common, heads=2, channels=[4], gain_step=spectral.hop_length // 4)),
    }
    info = {"pitch_range": [36, 96], "style_ranges": {s: [36, 96] for s in styles},
            "training_data": {"name": "none (random test bundle)"},
            "evaluation": {"note": "untrained, for tests only"}}
    return save_bundle(path, Decoder(model_cfg), inverters, spectral, list(styles), name=Path(path).name,
                       encoder=Encoder(model_cfg) if encoder else None, info=info)
