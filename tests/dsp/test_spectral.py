"""The shared spectral maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waeserver.dsp.spectral import (
    SpectralConfig,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
    mel_to_linear,
    stft_magnitude,
)


def test_mel_scale_round_trip_and_filterbank():
    hz = np.array([0.0, 440.0, 1000.0, 4000.0, 11025.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, atol=1e-6)
    cfg = SpectralConfig()
    fb = mel_filterbank(cfg)
    assert fb.shape == (128, 513) and (fb >= 0).all()
    assert (fb.sum(axis=1) > 0).all()  # no empty band


def test_log_mel_of_a_sine_peaks_at_its_band():
    cfg = SpectralConfig()
    t = np.arange(cfg.n_samples) / cfg.sample_rate
    mel = log_mel(0.5 * np.sin(2 * np.pi * 1000.0 * t), cfg)
    assert mel.shape == (128, 128)
    band = mel[:, 64].argmax()
    centres = mel_to_hz(np.linspace(hz_to_mel(np.array([cfg.f_min]))[0],
                                    hz_to_mel(np.array([cfg.f_max]))[0], cfg.n_mels + 2))[1:-1]
    assert abs(centres[band] - 1000.0) < 60


def test_mel_inverse_is_non_negative_and_close():
    cfg = SpectralConfig()
    t = torch.arange(cfg.n_samples) / cfg.sample_rate
    wave = (0.3 * torch.sin(2 * torch.pi * 330 * t) + 0.1 * torch.sin(2 * torch.pi * 990 * t))[None]
    mag = stft_magnitude(wave, cfg)
    fb = torch.from_numpy(mel_filterbank(cfg))
    logmel = torch.log((fb @ mag).clamp(min=cfg.log_floor))
    lin = mel_to_linear(logmel, cfg)
    assert lin.shape == mag.shape and (lin >= 0).all()
    remel = torch.log((fb @ lin).clamp(min=cfg.log_floor))
    assert (remel - logmel).abs().mean() < 0.1


def test_config_round_trip_and_refusal():
    cfg = SpectralConfig(sample_rate=16000, f_max=8000.0)
    assert SpectralConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown spectral settings"):
        SpectralConfig.from_dict({**cfg.to_dict(), "colour": 1})


def test_the_log_mel_loss_sees_what_the_mel_shows():
    """LogMelLoss: 0 for the same waveform, more for a note an octave off than for one 10 % louder,
    and a finite gradient even for silence (|.| has none at exactly zero)."""
    import math

    from waeserver.dsp.stft_loss import LogMelLoss

    cfg = SpectralConfig()
    loss = LogMelLoss(cfg)
    t = torch.arange(cfg.sample_rate // 2) / cfg.sample_rate
    note = 0.1 * torch.sin(2 * math.pi * 440 * t)[None]
    octave = 0.1 * torch.sin(2 * math.pi * 880 * t)[None]
    assert float(loss(note, note)) == 0.0
    assert float(loss(octave, note)) > 5 * float(loss(1.1 * note, note)) > 0
    silence = torch.zeros_like(note, requires_grad=True)
    loss(silence + 1e-3 * note, note).backward()
    assert torch.isfinite(silence.grad).all() and silence.grad.abs().sum() > 0
