"""Spectral maths shared by datasets, training, Griffin-Lim and evaluation.

Every log-mel spectrogram in the project comes from :class:`MelSpectrogram` with one
:class:`SpectralConfig`, so a model, its dataset and its inverters always agree.

Shapes: waveforms are ``[B, T]``, magnitudes ``[B, n_fft // 2 + 1, frames]``, log-mels
``[B, n_mels, frames]`` with ``frames = T // hop_length``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from waeserver.settings import from_plain


@dataclass(frozen=True)
class SpectralConfig:
    """Settings of the log-magnitude mel spectrogram (natural log of a magnitude mel)."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 128
    f_min: float = 30.0
    f_max: float = 11025.0
    n_frames: int = 128
    log_floor: float = 1e-5

    @property
    def n_samples(self) -> int:
        """Length of one note in samples (``n_frames * hop_length``, about 1.49 s at 22050 Hz)."""
        return self.n_frames * self.hop_length

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpectralConfig:
        return from_plain(cls, data, "spectral settings")


# Slaney's mel scale: linear below MEL_BREAK_HZ (MEL_LINEAR_HZ per mel), logarithmic above
MEL_LINEAR_HZ = 200.0 / 3
MEL_BREAK_HZ = 1000.0
MEL_BREAK = 15.0                                  # MEL_BREAK_HZ / MEL_LINEAR_HZ, in mels
MEL_LOG_STEP = math.log(6.4) / 27.0               # natural log of the frequency ratio per mel above


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / MEL_LINEAR_HZ
    log_region = hz >= MEL_BREAK_HZ
    mel[log_region] = MEL_BREAK + np.log(hz[log_region] / MEL_BREAK_HZ) / MEL_LOG_STEP
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * MEL_LINEAR_HZ
    log_region = mel >= MEL_BREAK
    hz[log_region] = MEL_BREAK_HZ * np.exp(MEL_LOG_STEP * (mel[log_region] - MEL_BREAK))
    return hz


def mel_filterbank(cfg: SpectralConfig) -> np.ndarray:
    """Triangular, area-normalised mel filters, ``[n_mels, n_freqs]``."""
    fft_hz = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_freqs)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array([cfg.f_min]))[0],
                                  hz_to_mel(np.array([cfg.f_max]))[0], cfg.n_mels + 2))
    lower = (fft_hz[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    upper = (edges[2:, None] - fft_hz[None, :]) / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


class MelSpectrogram(nn.Module):
    """Waveform ``[B, T]`` to log-mel ``[B, n_mels, T // hop]``."""

    def __init__(self, cfg: SpectralConfig = SpectralConfig()):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.register_buffer("filters", torch.from_numpy(mel_filterbank(cfg)), persistent=False)

    def magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        return stft_magnitude(wave, self.cfg, self.window)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.filters, self.magnitude(wave))
        return torch.log(torch.clamp(mel, min=self.cfg.log_floor))


def stft(wave: torch.Tensor, cfg: SpectralConfig, window: torch.Tensor | None = None,
         n_fft: int | None = None, hop: int | None = None) -> torch.Tensor:
    """Complex STFT ``[B, F, T // hop]`` (centred frames; the last, half-empty one dropped)."""
    n_fft = n_fft or cfg.n_fft
    hop = hop or cfg.hop_length
    if window is None or window.shape[-1] != n_fft:
        window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, n_fft, hop_length=hop, window=window, center=True,
                      pad_mode="constant", return_complex=True)
    return spec[..., : wave.shape[-1] // hop]


def stft_magnitude(wave: torch.Tensor, cfg: SpectralConfig, window: torch.Tensor | None = None,
                   n_fft: int | None = None, hop: int | None = None) -> torch.Tensor:
    return stft(wave, cfg, window, n_fft, hop).abs()


def log_mel(wave, cfg: SpectralConfig = SpectralConfig()) -> np.ndarray:
    """Convenience for numpy callers: ``[T]`` or ``[B, T]`` array to log-mel as float32."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    squeeze = x.dim() == 1
    with torch.no_grad():
        out = MelSpectrogram(cfg)(x[None] if squeeze else x)
    return (out[0] if squeeze else out).numpy()


def mel_to_linear(logmel: torch.Tensor, cfg: SpectralConfig, n_iter: int = 60) -> torch.Tensor:
    """Non-negative least-squares inverse of the mel filterbank.

    ``[B, n_mels, frames]`` log-mel to ``[B, n_freqs, frames]`` magnitude. Starts from the
    clamped pseudo-inverse and refines with multiplicative updates, which keep every bin
    non-negative (a plain pseudo-inverse rings into negative magnitudes).
    """
    fb = torch.from_numpy(mel_filterbank(cfg)).to(logmel.device, logmel.dtype)
    mel = torch.exp(logmel)
    x = torch.clamp(torch.linalg.pinv(fb) @ mel, min=1e-8)
    fbt_y = fb.T @ mel
    gram = fb.T @ fb
    for _ in range(n_iter):
        x = x * fbt_y / (gram @ x + 1e-10)
    return x


def griffin_lim(magnitude: torch.Tensor, cfg: SpectralConfig, n_iter: int = 100,
                momentum: float = 0.99, seed: int = 0) -> torch.Tensor:
    """Fast Griffin-Lim (with momentum): magnitude ``[B, F, frames]`` to waveform ``[B, frames*hop]``."""
    window = torch.hann_window(cfg.n_fft, device=magnitude.device, dtype=magnitude.dtype)
    length = magnitude.shape[-1] * cfg.hop_length
    # One empty frame completes the centred frame grid that istft expects for `length`.
    mag = torch.nn.functional.pad(magnitude, (0, 1))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    phase = torch.rand(mag.shape, generator=gen).to(mag.device, mag.dtype) * (2 * math.pi)
    angles = torch.polar(torch.ones_like(mag), phase)
    previous = torch.zeros_like(angles)

    def project(spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wave = torch.istft(spec, cfg.n_fft, hop_length=cfg.hop_length, window=window,
                           center=True, length=length)
        return wave, torch.stft(wave, cfg.n_fft, hop_length=cfg.hop_length, window=window,
                                center=True, pad_mode="constant", return_complex=True)

    for _ in range(n_iter):
        _, rebuilt = project(mag * angles)
        angles = rebuilt - previous * (momentum / (1 + momentum))
        previous = rebuilt
        angles = angles / (angles.abs() + 1e-16)
    wave, _ = project(mag * angles)
    return wave


def spectral_convergence(pred_mag: torch.Tensor, true_mag: torch.Tensor) -> torch.Tensor:
    """``||true - pred||_F / ||true||_F`` per item, ``[B]``."""
    dims = tuple(range(1, true_mag.dim()))
    return torch.linalg.vector_norm(true_mag - pred_mag, dim=dims) / \
        torch.linalg.vector_norm(true_mag, dim=dims).clamp(min=1e-8)


def log_spectral_distance(pred_mag: torch.Tensor, true_mag: torch.Tensor,
                          floor: float = 1e-5) -> torch.Tensor:
    """Root-mean-square difference of 20·log10 magnitudes in dB, per item ``[B]``."""
    diff = 20 * (torch.log10(pred_mag.clamp(min=floor)) - torch.log10(true_mag.clamp(min=floor)))
    return diff.pow(2).flatten(1).mean(1).sqrt()


def log_mel_distance(pred_logmel: torch.Tensor, true_logmel: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of log-mels, per item ``[B]``."""
    return (pred_logmel - true_logmel).abs().flatten(1).mean(1)
