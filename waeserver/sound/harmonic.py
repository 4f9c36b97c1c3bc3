"""The harmonic inverter: one amplitude per harmonic of the note's f0, plus shaped noise.

A small convolutional network reads the log-mel frames (and the note's f0) and predicts, for
every frame:

- one log-amplitude correction per harmonic ``k = 1..K`` (``K`` up to Nyquist, capped at
  ``max_harmonics``), added to the amplitude read straight off the mel at ``k * f0``;
- one log-magnitude correction per noise band (the mel bands), added to the mel's own level:
  the noise follows the mel between the harmonics;
- a frequency deviation per group of harmonics (the fundamental, the 2nd, then octaves of
  harmonic numbers: 3-4, 5-8, ...), bounded by ``tanh`` to ``max_deviation`` and shifted so that
  the fundamental's averages to zero over the note: vibrato, beating and stretched partials,
  while the note stays at its pitch;
- optionally (``layered_harmonics`` ``P > 0``) a second partial for each of the first ``P``
  harmonics, a signed offset per deviation group away from the first (bounded by
  ``max_layer_offset``, smoothed like the deviations) and a share per harmonic and frame: the
  pair sounds ``a cos(theta)`` and ``a sin(theta)``. A soundfont note made of two detuned layers
  (FluidR3's strings: partials 10 to 20 cents apart) is two partials per harmonic, which one
  sinusoid cannot be. With ``theta = 0`` (how a new layer head starts) the inverter is exactly
  the one-partial inverter it was trained on from.

Synthesis is in the frequency domain, frame by frame (the inverse of Rodet and Depalle's FFT
analysis): each harmonic adds the window's transform, ``kernel_bins`` bins of it read from a
table, at its fractional bin, with the phase it has reached at the frame's centre; the noise is a
fixed table of complex Gaussian spectra shaped by the band magnitudes; one inverse STFT
(``n_fft`` Hann frames every ``hop``) overlaps and adds the frames, so amplitudes, noise and
frequency move smoothly from frame to frame. Nothing runs per sample but the inverse FFT and the
overlap-add, and the cost grows with the number of harmonics below Nyquist: low notes cost most.

The pitch is the MIDI pitch's by construction (harmonics at ``k * f0``, deviations that average
out), as for the source-filter MCNN, but the timbre is no longer a channel vocoder's: every
harmonic has its own amplitude.

At inference on the CPU (no gradients, float32) everything after the network runs in C
(``_harmonic.c``, built with the package): the same controls as :meth:`HarmonicInverter.controls`
and the same spectra as :meth:`HarmonicInverter.spectra`, the torch reference that training
differentiates, without two dozen small tensor operations and the frames x harmonics x taps tensors.

Shapes: log-mel ``[B, M, F]`` and ``f0 [B]`` Hz in, waveform ``[B, F * hop]`` out.
"""

from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from waeserver.dsp.native import load_library
from waeserver.dsp.pitch import octaves_from_a4
from waeserver.dsp.spectral import MEL_BREAK, MEL_BREAK_HZ, MEL_LINEAR_HZ, MEL_LOG_STEP, hz_to_mel, mel_to_hz
from waeserver.settings import from_plain


@dataclass
class HarmonicConfig:
    """Plain data describing one harmonic inverter; ``to_dict``/``from_dict`` round-trip through YAML."""

    n_mels: int = 128
    hop_length: int = 256
    sample_rate: int = 22050
    f_min: float = 30.0                # the mel scale of the input (the dataset's spectral settings)
    f_max: float = 11025.0
    n_fft: int = 512                   # synthesis frame (Hann), overlapped every hop
    analysis_fft: int = 1024           # the mel's FFT size: what its levels mean in amplitudes
    max_harmonics: int = 160           # harmonics above Nyquist are dropped; above this, noise only
    hidden: int = 64
    deviation_groups: int = 8          # harmonic 1, 2, 3-4, 5-8, ... (the last takes the rest)
    max_deviation: float = 0.03        # bound of each group's relative frequency deviation
    kernel_bins: int = 6               # bins of the window's transform written per harmonic
    mel_offset: float = 0.0            # input normalisation: (log-mel - offset) / scale
    mel_scale: float = 1.0
    noise_seed: int = 0
    layered_harmonics: int = 0         # harmonics 1..P get a second, detuned partial (0: none)
    max_layer_offset: float = 0.015    # bound of the second partials' offset from the first (26 cents)

    def __post_init__(self):
        if self.n_fft & (self.n_fft - 1) or self.n_fft < 2 * self.hop_length:
            raise ValueError(f"harmonic inverter n_fft {self.n_fft} must be a power of two, "
                             f"at least twice the hop {self.hop_length}")
        if self.kernel_bins % 2 or not 2 <= self.kernel_bins <= 16:
            raise ValueError("harmonic inverter kernel_bins must be even, 2 to 16")
        if not 1 <= self.max_harmonics <= 2048 or self.deviation_groups < 1:
            raise ValueError("harmonic inverter needs 1 to 2048 harmonics and at least one deviation group")
        if not 0 <= self.max_deviation < 0.1:
            raise ValueError("harmonic inverter max_deviation must lie in [0, 0.1)")
        if not 0 <= self.layered_harmonics <= self.max_harmonics or not 0 < self.max_layer_offset < 0.1:
            raise ValueError("harmonic inverter layered_harmonics must lie in [0, max_harmonics] and "
                             "max_layer_offset in (0, 0.1)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HarmonicConfig:
        return from_plain(cls, data, "harmonic inverter settings")


def window_kernel(n_fft: int, bins: int, oversample: int) -> torch.Tensor:
    """The periodic Hann window's transform, centred on the frame's middle (so it is real), at
    ``bins * oversample + 1`` points from ``-bins/2`` to ``bins/2`` bins: ``[bins * oversample + 1]``."""
    n = np.arange(n_fft) - n_fft // 2
    window = 0.5 + 0.5 * np.cos(2 * np.pi * n / n_fft)       # hann(n + N/2)
    x = np.linspace(-bins / 2, bins / 2, bins * oversample + 1)
    return torch.from_numpy((window[None] * np.cos(2 * np.pi * x[:, None] * n[None] / n_fft)).sum(1)).float()


class ControlSizes(ctypes.Structure):
    """The settings ``_harmonic.c`` computes the controls with (its ``ControlSizes``)."""

    _fields_ = ([(name, ctypes.c_int) for name in ("n_mels", "groups", "sample_rate", "analysis_fft")]
                + [(name, ctypes.c_float) for name in
                   ("mel_linear_hz", "mel_break_hz", "mel_break", "mel_log_step",
                    "mel_lo", "mel_step", "max_deviation", "log_ceiling", "noise_offset", "max_layer_offset")])


class SynthSizes(ctypes.Structure):
    """The sizes ``_harmonic.c`` synthesizes with (its ``SynthSizes``)."""

    _fields_ = [(name, ctypes.c_int) for name in
                ("n_fft", "hop", "sample_rate", "taps", "oversample", "n_mels", "noise_frames")]


@functools.cache
def _native() -> ctypes.CDLL:
    p, i = ctypes.c_void_p, ctypes.c_int
    return load_library("waeserver.sound._harmonic", "harmonic inverter's C synthesis",
                        [("harmonic_controls", i, [p, i, i, i, i] + [p] * 8),
                         ("harmonic_spectra", i, [p, i, i, i] + [p] * 10)])


class HarmonicInverter(nn.Module):
    """Log-mel ``[B, M, F]`` and ``f0 [B]`` Hz to waveform ``[B, F * hop]``."""

    OVERSAMPLE = 64                    # kernel table points per bin (linear interpolation in between)
    LOG_CEILING = 2.0                  # far above any real note's log-amplitude: only guards overflow
    NOISE_FRAMES = 256                 # the fixed noise table repeats after this many frames
    LAYER_OFFSET_START = 0.006         # second partials start 10 cents above the first

    def __init__(self, cfg: HarmonicConfig):
        super().__init__()
        self.cfg = cfg
        self.native = True   # at inference on the CPU, the controls and the synthesis in C (benchmarks turn it off)
        k, m = cfg.max_harmonics, cfg.n_mels
        self.net = nn.Sequential(
            nn.Conv1d(m + 1, cfg.hidden, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv1d(cfg.hidden, cfg.hidden, 3, padding=1), nn.LeakyReLU(0.1))
        self.out = nn.Conv1d(cfg.hidden, cfg.deviation_groups + m + k, 1)
        with torch.no_grad():
            # start from the amplitudes read off the mel and no deviation at all: a deviation is
            # only worth having where the losses ask for one
            self.out.weight.mul_(0.1)
            self.out.weight[:cfg.deviation_groups].zero_()
            self.out.bias.zero_()
        if cfg.layered_harmonics:
            # the second partials: offsets per group, then one share per harmonic. Shares start at
            # 0 (exactly the one-partial inverter), offsets at 10 cents up, so that a share has a
            # gradient from the first step
            self.layer_out = nn.Conv1d(cfg.hidden, cfg.deviation_groups + cfg.layered_harmonics, 1)
            with torch.no_grad():
                self.layer_out.weight.zero_()
                self.layer_out.bias.zero_()
                self.layer_out.bias[:cfg.deviation_groups] = math.atanh(self.LAYER_OFFSET_START / cfg.max_layer_offset)
        # deviations move slowly: a triangular average over 5 frames (58 ms; vibrato is 5 to 7 Hz).
        # A deviation that jumps from frame to frame puts overlapping frames out of phase
        self.register_buffer("smooth", torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0]) / 9, persistent=False)
        n_freqs = cfg.n_fft // 2 + 1
        mel_lo, mel_hi = hz_to_mel(np.array([cfg.f_min, cfg.f_max]))
        self.mel_lo, self.mel_step = float(mel_lo), float((mel_hi - mel_lo) / (m + 1))
        # noise: per-bin magnitude = mel level x bin width; starts quieter than the harmonics
        self.noise_offset = math.log(cfg.sample_rate / cfg.analysis_fft) - 2.0
        edges = mel_to_hz(np.linspace(mel_lo, mel_hi, m + 2))
        # full width in Hz of each mel triangle: how much of a harmonic's energy a band collects
        self.register_buffer("band_width", torch.from_numpy(edges[2:] - edges[:-2]).float(), persistent=False)
        # noise bands (the mel bands) to FFT bins: linear interpolation between band centres
        centres = edges[1:-1]
        bin_hz = np.linspace(0, cfg.sample_rate / 2, n_freqs)
        pos = np.interp(bin_hz, centres, np.arange(m))
        low = np.clip(np.floor(pos), 0, m - 2).astype(np.int64)
        self.register_buffer("noise_low", torch.from_numpy(low), persistent=False)
        self.register_buffer("noise_frac", torch.from_numpy(pos - low).float(), persistent=False)
        # the window's transform as rows: row r holds bins j = 0..w-1 at table point j * R + r,
        # times (-1)^j
        table = window_kernel(cfg.n_fft, cfg.kernel_bins, self.OVERSAMPLE)
        w, r = cfg.kernel_bins, self.OVERSAMPLE
        rows = torch.stack([table[j * r: j * r + r + 1] * (-1) ** j for j in range(w)], dim=1)  # [R+1,w]
        self.register_buffer("kernel_rows", F.pad(rows, (0, 0, 0, 1)), persistent=False)
        self._envelope: torch.Tensor | None = None
        gen = torch.Generator().manual_seed(cfg.noise_seed)
        noise = torch.randn(self.NOISE_FRAMES, n_freqs, 2, generator=gen) / math.sqrt(2)
        self.register_buffer("noise", torch.view_as_complex(noise), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        # harmonic 1 -> 0, 2 -> 1, 3-4 -> 2, 5-8 -> 3, ...
        groups = [0 if h == 1 else min(int(math.ceil(math.log2(h))), cfg.deviation_groups - 1)
                  for h in range(1, k + 1)]
        self.register_buffer("group_of", torch.tensor(groups, dtype=torch.int64), persistent=False)

    # -- the parts -----------------------------------------------------------------------------

    def count(self, f0: torch.Tensor) -> int:
        """Harmonics to compute for a batch: enough for its lowest note (a note alone gives the
        same waveform as in a batch: harmonics it does not have are silent either way)."""
        cfg = self.cfg
        top = cfg.sample_rate / 2 / (1 + cfg.max_deviation)
        return max(1, min(cfg.max_harmonics, int(top // float(f0.min().clamp(min=1.0)))))

    def pairs(self, count: int) -> int:
        """Harmonics with a second partial among the first ``count``."""
        return min(self.cfg.layered_harmonics, count)

    def numbers(self, count: int) -> torch.Tensor:
        """The harmonic number of each partial ``[count + pairs]``: ``1..count``, then the layered ``1..pairs``."""
        device = self.group_of.device
        return torch.cat([torch.arange(1, n + 1, device=device) for n in (count, self.pairs(count))])

    def mel_position(self, hz: torch.Tensor) -> torch.Tensor:
        """Fractional mel-band index of frequencies in Hz (band ``j`` centred on edge ``j + 1``)."""
        brk = MEL_BREAK_HZ
        mel = torch.where(hz < brk, hz / MEL_LINEAR_HZ, MEL_BREAK + torch.log(hz.clamp(min=brk) / brk) / MEL_LOG_STEP)
        return ((mel - self.mel_lo) / self.mel_step - 1).clamp(0, self.cfg.n_mels - 1)

    def network(self, logmel: torch.Tensor, f0: torch.Tensor, count: int) -> torch.Tensor:
        """The network's output rows ``[B, G + M + K (+ G + P), F]`` for ``K = count``: deviations,
        noise corrections, harmonic corrections (a note needs only its first rows), then with
        layered harmonics the second partials' offsets and shares (``P = pairs(count)``)."""
        cfg = self.cfg
        batch, n_mels, frames = logmel.shape
        normed = (logmel - cfg.mel_offset) / cfg.mel_scale
        pitch = octaves_from_a4(f0.to(logmel.dtype))[:, None, None].expand(batch, 1, frames)
        hidden = self.net(torch.cat([normed, pitch], dim=1))
        rows = cfg.deviation_groups + n_mels + count
        raw = F.conv1d(hidden, self.out.weight[:rows], self.out.bias[:rows])
        pairs = self.pairs(count)
        if not pairs:
            return raw
        rows = cfg.deviation_groups + pairs
        return torch.cat([raw, F.conv1d(hidden, self.layer_out.weight[:rows], self.layer_out.bias[:rows])], dim=1)

    def smoothed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, F, G]`` averaged over 5 frames along F (the ends repeated)."""
        batch, frames, g = x.shape
        y = F.conv1d(F.pad(x.transpose(1, 2).reshape(batch * g, 1, frames), (2, 2), mode="replicate"),
                     self.smooth.view(1, 1, 5))
        return y.view(batch, g, frames).transpose(1, 2)

    def controls(self, logmel: torch.Tensor, f0: torch.Tensor, count: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per frame: partial amplitudes ``[B, F, K + P]`` (0 above Nyquist), noise band magnitudes
        ``[B, F, M]`` and relative frequency deviations ``[B, F, K + P]``, for ``K = count`` harmonics
        and their ``P = pairs(count)`` second partials (see :meth:`numbers`)."""
        cfg = self.cfg
        batch, n_mels, frames = logmel.shape
        g = cfg.deviation_groups
        f0 = f0.to(logmel.dtype)
        out = self.network(logmel, f0, count).transpose(1, 2)                           # [B,F,rows]
        raw_dev, noise_corr, harm_corr = out[..., :g], out[..., g:g + n_mels], out[..., g + n_mels:g + n_mels + count]

        # each harmonic's level read off the mel between the two bands around it
        numbers = torch.arange(1, count + 1, device=logmel.device, dtype=logmel.dtype)
        hz = f0[:, None] * numbers                                                      # [B,K]
        pos = self.mel_position(hz)
        low = pos.floor().clamp(max=n_mels - 2)
        frac = pos - low
        low = low.long()
        pick = logmel.new_zeros(batch, n_mels, count)
        pick.scatter_(1, low[:, None], (1 - frac)[:, None]).scatter_(1, low[:, None] + 1, frac[:, None])
        seq = logmel.transpose(1, 2)                                                    # [B,F,M]
        level = torch.bmm(seq, pick)                                                    # [B,F,K]
        # a band collects one harmonic's energy over its own width, or over the spacing when
        # several harmonics fall into it: the amplitude read off the mel (docs/sound.md)
        width = torch.lerp(self.band_width[low], self.band_width[low + 1], frac)
        collect = torch.log(torch.minimum(width, 2 * f0[:, None]) / cfg.analysis_fft)          # [B,K]
        audible = hz * (1 + cfg.max_deviation) < cfg.sample_rate / 2
        collect = torch.where(audible, collect, torch.full_like(collect, -1e4))
        amp = torch.exp((level + collect[:, None] + harm_corr).clamp(max=self.LOG_CEILING))

        noise = torch.exp((seq + self.noise_offset + noise_corr).clamp(max=self.LOG_CEILING))

        dev = self.smoothed(cfg.max_deviation * torch.tanh(raw_dev))                   # [B,F,G]
        dev = dev - dev[..., :1].mean(dim=1, keepdim=True)   # the fundamental averages to its pitch
        dev = dev[..., self.group_of[:count]]
        pairs = self.pairs(count)
        if not pairs:
            return amp, noise, dev
        layer = out[..., g + n_mels + count:]
        offset = self.smoothed(cfg.max_layer_offset * torch.tanh(layer[..., :g]))[..., self.group_of[:pairs]]
        theta = (math.pi / 2) * torch.tanh(layer[..., g:])                              # [B,F,P]
        first = amp[..., :pairs]
        audible = hz[:, :pairs] * (1 + cfg.max_deviation + cfg.max_layer_offset) < cfg.sample_rate / 2
        second = torch.where(audible[:, None], first * torch.sin(theta), torch.zeros_like(first))
        return (torch.cat([first * torch.cos(theta), amp[..., pairs:], second], dim=-1), noise,
                torch.cat([dev, dev[..., :pairs] + offset], dim=-1))

    def spectra(self, amp: torch.Tensor, noise_bands: torch.Tensor, dev: torch.Tensor,
                f0: torch.Tensor, numbers: torch.Tensor | None = None) -> torch.Tensor:
        """One-sided spectra ``[B, F, n_fft/2 + 1]`` of the windowed frames; partial ``j`` of ``amp``
        and ``dev`` is harmonic ``numbers[j]`` (default ``1..``)."""
        cfg = self.cfg
        batch, frames, count = amp.shape
        n, w, half = cfg.n_fft, cfg.kernel_bins, cfg.n_fft // 2 + 1
        numbers = (torch.arange(1, count + 1, device=amp.device) if numbers is None else numbers).to(torch.float64)
        # cycles per hop of each harmonic, wrapped in float64: frac(a * i) = frac(frac(a) * i), so
        # the nominal phase at every frame's centre stays exact in float32
        per_hop = f0.to(torch.float64)[:, None] * numbers * cfg.hop_length / cfg.sample_rate  # [B,K]
        index = torch.arange(frames, device=amp.device, dtype=amp.dtype)[None, :, None]
        nominal = torch.frac(torch.frac(per_hop).float()[:, None, :] * index)             # [B,F,K] cycles
        # plus the deviation integrated between frame centres (trapezoid)
        steps = F.pad(0.5 * (dev[:, 1:] + dev[:, :-1]), (0, 0, 1, 0))
        drift = torch.cumsum(steps, dim=1) * per_hop.float()[:, None, :]
        centre = (f0.to(amp.dtype)[:, None] * (n / cfg.sample_rate)
                  * numbers.to(amp.dtype))[:, None, :] * (1 + dev)                       # bins [B,F,K]
        low = torch.floor(centre)
        # the w bins from low - (w/2 - 1) read the window's transform at offsets that share one
        # fractional part: one row of the table per harmonic; (-1)^bin because the frame's
        # centre is its sample n/2 (the row holds the (-1)^j of its own bins)
        position = (1 + low - centre) * self.OVERSAMPLE
        row = position.floor()
        taps = torch.lerp(F.embedding(row.long(), self.kernel_rows), F.embedding(row.long() + 1, self.kernel_rows),
                          (position - row)[..., None])                                  # [B,F,K,w]
        # sines at t = 0; the (-1)^low as half a cycle (polar's gradient wants a non-negative length)
        cycles = nominal + drift + 0.5 * torch.remainder(low + (w // 2 - 1), 2) - 0.25
        # amp times a unit phasor, not polar(amp, ...), whose gradient is 0 where amp is (a new second partial)
        value = amp * torch.polar(torch.ones_like(amp), 2 * math.pi * cycles)              # [B,F,K]
        # bins -w .. n/2 + w, kept apart from the wrap-around of negative frequencies
        start = (low - (w // 2 - 1) + w).clamp(0, half + w - 1).long()
        where = (start[..., None] + torch.arange(w, device=amp.device)).view(batch, frames, -1)
        ext = torch.zeros(batch, frames, half + 2 * w, dtype=value.dtype, device=amp.device)
        ext.scatter_add_(2, where, (value[..., None] * taps).view(batch, frames, -1))
        # the real frame: each bin plus the mirror of its negative frequency (bins below 0 fold
        # back onto the lowest, bins past n/2 onto the highest)
        spec = 0.5 * ext[..., w:w + half]
        spec[..., :w + 1] += 0.5 * ext[..., :w + 1].flip(-1).conj()
        spec[..., half - 1 - w:] += 0.5 * ext[..., half - 1 + w:].flip(-1).conj()

        shaped = torch.lerp(noise_bands.index_select(-1, self.noise_low),
                            noise_bands.index_select(-1, self.noise_low + 1), self.noise_frac)  # [B,F,bins]
        table = self.noise
        if frames > table.shape[0]:
            table = table.repeat(-(-frames // table.shape[0]), 1)
        return spec + shaped * table[:frames]

    def controls_native(self, logmel: torch.Tensor, f0: torch.Tensor, count: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`controls` after the network computed in C (``_harmonic.c``; CPU float32, no
        gradients), with the last frame's controls held for one frame more, as :meth:`forward` wants
        them: ``[B, F + 1, K + P]``, ``[B, F + 1, M]``, ``[B, F + 1, K + P]``."""
        cfg = self.cfg
        batch, n_mels, frames = logmel.shape
        raw = self.network(logmel, f0, count).contiguous()
        sizes = ControlSizes(n_mels, cfg.deviation_groups, cfg.sample_rate, cfg.analysis_fft, MEL_LINEAR_HZ,
                             MEL_BREAK_HZ, MEL_BREAK, MEL_LOG_STEP, self.mel_lo, self.mel_step, cfg.max_deviation,
                             self.LOG_CEILING, self.noise_offset, cfg.max_layer_offset)
        pairs = self.pairs(count)
        amp, dev = torch.empty(batch, frames + 1, count + pairs), torch.empty(batch, frames + 1, count + pairs)
        noise = torch.empty(batch, frames + 1, n_mels)
        inputs = [raw, logmel.contiguous(), f0.to(torch.float64).contiguous(), self.band_width, self.group_of]
        if _native().harmonic_controls(ctypes.byref(sizes), batch, frames, count, pairs,
                                       *[t.data_ptr() for t in inputs + [amp, noise, dev]]):
            raise MemoryError("harmonic inverter: no memory for a note's deviations")
        return amp, noise, dev

    def spectra_native(self, amp: torch.Tensor, noise_bands: torch.Tensor, dev: torch.Tensor,
                       f0: torch.Tensor, numbers: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`spectra` computed in C (``_harmonic.c``): CPU float32, no gradients."""
        cfg = self.cfg
        batch, frames, count = amp.shape
        half = cfg.n_fft // 2 + 1
        sizes = SynthSizes(cfg.n_fft, cfg.hop_length, cfg.sample_rate, cfg.kernel_bins, self.OVERSAMPLE,
                           cfg.n_mels, self.NOISE_FRAMES)
        numbers = torch.arange(1, count + 1) if numbers is None else numbers
        inputs = [f0.to(torch.float64).contiguous(), numbers.to(torch.int64).contiguous(), amp.contiguous(),
                  dev.contiguous(), noise_bands.contiguous(),
                  self.noise_low.contiguous(), self.noise_frac, torch.view_as_real(self.noise), self.kernel_rows]
        out = torch.empty(batch, frames, half, 2)
        if _native().harmonic_spectra(ctypes.byref(sizes), batch, frames, count,
                                      *[t.data_ptr() for t in inputs], out.data_ptr()):
            raise MemoryError("harmonic inverter: no memory for a frame's spectrum")
        return torch.view_as_complex(out)

    def overlap_add(self, spec: torch.Tensor) -> torch.Tensor:
        """Spectra ``[B, F + 1, n_fft/2 + 1]`` of frames centred every hop to the first ``F * hop``
        samples: the inverse STFT (window, overlap-add, divided by the summed squared window). The
        frame after the last covers the end, where the last frame's window alone falls to 0."""
        cfg = self.cfg
        batch, count, _ = spec.shape
        frames, n, hop = count - 1, cfg.n_fft, cfg.hop_length
        parts = n // hop
        pieces = (torch.fft.irfft(spec, n=n) * self.window).view(batch, count, parts, hop)
        # frame f covers hops f - parts/2 .. f + parts/2 - 1 of the output
        out = pieces.new_zeros(batch, count + parts, hop)
        for j in range(parts):
            out[:, j:j + count] += pieces[:, :, j]
        lead = parts // 2
        return out[:, lead:lead + frames].reshape(batch, frames * hop) / self.envelope(frames)

    def envelope(self, frames: int) -> torch.Tensor:
        """The summed squared window over ``frames * hop`` samples, with ``frames + 1`` frames
        (kept for the last length)."""
        if self._envelope is None or self._envelope.shape[-1] != frames * self.cfg.hop_length \
                or self._envelope.device != self.window.device:
            cfg = self.cfg
            parts = cfg.n_fft // cfg.hop_length
            sq = self.window.pow(2).view(parts, cfg.hop_length)
            out = sq.new_zeros(frames + 1 + parts, cfg.hop_length)
            for j in range(parts):
                out[j:j + frames + 1] += sq[j]
            self._envelope = out[parts // 2:parts // 2 + frames].reshape(-1)
        return self._envelope

    def prepare(self, logmel: torch.Tensor, f0: torch.Tensor) -> tuple:
        """Everything :meth:`waveform` needs for the notes of ``logmel [B, M, F]``: the controls of
        every frame (the last held for one more), ``f0`` and the partials' harmonic numbers."""
        count = self.count(f0)
        numbers = self.numbers(count)
        if self.uses_c(logmel):
            return (*self.controls_native(logmel, f0, count), f0, numbers)
        # the controls of the last frame hold for the one after it
        return (*(torch.cat([c, c[:, -1:]], dim=1) for c in self.controls(logmel, f0, count)), f0, numbers)

    def uses_c(self, x: torch.Tensor) -> bool:
        """Whether the controls and the spectra of ``x`` are computed in C: at inference on the CPU in float32."""
        return self.native and not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32

    def waveform(self, prepared: tuple, frames: int | None = None) -> torch.Tensor:
        """The waveform ``[B, frames * hop]`` of :meth:`prepare`'s notes: the whole notes, or only
        their first ``frames`` hops, which are exactly the whole notes' first samples (only the
        frames that overlap them are synthesized): a note can be handed over in two parts."""
        amp, noise, dev, f0, numbers = prepared
        whole = amp.shape[1] - 1
        rows = whole + 1 if frames is None or frames >= whole else frames + self.cfg.n_fft // self.cfg.hop_length // 2
        amp, noise, dev = amp[:, :rows], noise[:, :rows], dev[:, :rows]
        spectra = self.spectra_native if self.uses_c(amp) else self.spectra
        wave = self.overlap_add(spectra(amp, noise, dev, f0, numbers))
        return wave if rows == whole + 1 else wave[:, :frames * self.cfg.hop_length]

    def forward(self, logmel: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        return self.waveform(self.prepare(logmel, f0))
