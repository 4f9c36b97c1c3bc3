"""MCNN: a multi-head convolutional inverter from log-mel frames to a waveform, and its training.

After Arık et al., "Fast spectrogram inversion using multi-head convolutional neural networks"
(2018). Each head is a stack of stride-2 transposed ``Conv1d`` layers with ELU, doubling the time
resolution ``log2(hop)`` times, so ``F`` frames become ``F * hop`` samples; the heads' outputs are
weighted by one trainable scale each, summed, and squashed by a scaled softsign.

Pitch. A network of this kind is shift-equivariant by whole frames: a steady note gives (nearly)
the same frame over and over, so its output repeats every ``hop`` samples and can only hold
harmonics of ``sample_rate / hop`` (86 Hz at 22050 Hz): most notes come out detuned by up to a
semitone or more. With ``excitation`` on (the default), the note's fundamental ``f0`` is an input
too: the heads' last layer emits, for each of a few fixed frequency bands, a sample-rate gain for
a band-limited harmonic source at ``f0`` and one for band-limited noise, and the sum of those
gated sources is the output. The transposed convolutions then only have to shape smooth
envelopes from the mel, which they learn in minutes, and the pitch is exact by construction.

The heads are run together as grouped convolutions (``groups=heads``), which is the same network
as separate heads and much faster on a CPU. The layers that run at high sample rates are kept
very thin because they dominate the cost.

Shapes: log-mel ``[B, M, F]`` (plus ``f0 [B]`` in Hz with excitation) in, waveform ``[B, F * hop]`` out.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)


@dataclass
class MCNNConfig:
    """Plain data describing one MCNN; ``to_dict``/``from_dict`` round-trip through YAML."""

    n_mels: int = 128
    hop_length: int = 256              # samples per frame; a power of two (one layer per doubling)
    heads: int = 8
    channels: list[int] = field(default_factory=lambda: [16, 8, 8, 4, 4, 2, 2])  # per head, after each layer but the last
    kernel_size: int = 4               # even; padding (k - 2) / 2 makes every layer double exactly
    mel_offset: float = 0.0            # input normalisation: (log-mel - offset) / scale
    mel_scale: float = 1.0
    excitation: bool = True            # harmonic + noise sources at f0, gated by the heads (see above)
    bands_per_head: int = 2            # with excitation: frequency bands each head gates
    sample_rate: int = 22050
    lowest_band_edge: float = 120.0    # band edges: 0, then geometric from here to Nyquist
    noise_seed: int = 0                # the fixed band-limited noise tables are drawn from this

    @property
    def n_bands(self) -> int:
        return self.heads * self.bands_per_head

    def band_edges(self) -> list[float]:
        """``n_bands + 1`` edges in Hz, from 0 to Nyquist."""
        nyquist = self.sample_rate / 2
        return [0.0] + np.geomspace(self.lowest_band_edge, nyquist, self.n_bands).tolist()

    def __post_init__(self):
        self.channels = [int(c) for c in self.channels]
        n_layers = self.hop_length.bit_length() - 1
        if self.hop_length & (self.hop_length - 1) or self.hop_length < 2:
            raise ValueError(f"MCNN hop length {self.hop_length} must be a power of two")
        if len(self.channels) != n_layers - 1:
            raise ValueError(f"MCNN needs {n_layers - 1} channel widths for hop {self.hop_length}, "
                             f"got {len(self.channels)}")
        if self.kernel_size % 2 or self.kernel_size < 2:
            raise ValueError("MCNN kernel size must be even")
        if self.excitation and not 0 < self.lowest_band_edge < self.sample_rate / 2:
            raise ValueError("MCNN lowest band edge must lie between 0 and Nyquist")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MCNNConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MCNN settings: {', '.join(sorted(unknown))}")
        return cls(**data)


class Upsample2(nn.ConvTranspose1d):
    """A stride-2 transposed ``Conv1d`` (``[B, C_in, L] -> [B, C_out, 2L]``), same weights and result.

    PyTorch's CPU kernel for grouped transposed convolutions is slow: 1.5 to 2x slower than it
    need be for the MCNN's thin heads, and about 5x when a group widens (the last layer). Grouped
    layers are computed here as one batched matrix product over the two output phases instead.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, groups: int):
        super().__init__(in_ch, out_ch, kernel_size, stride=2, padding=(kernel_size - 2) // 2, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return super().forward(x)
        phases = self.phases(x)                                                      # [B,g,2,co,L]
        batch, g, _, co, length = phases.shape
        return phases.permute(0, 1, 3, 4, 2).reshape(batch, g * co, 2 * length)

    def phases(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """The output with its even and odd samples apart: ``[B, groups, 2, C_out / groups, L]``.

        Output sample ``2m + r`` is ``phases[..., r, :, m]``. Interleaving them is a copy as
        large as the output, which the MCNN's last layer leaves to the (much smaller) waveform.
        Without ``bias`` the caller adds it (the MCNN adds it at frame rate, where it is cheap).
        """
        g, k, p = self.groups, self.kernel_size[0], self.padding[0]
        cin, co = self.in_channels // g, self.out_channels // g
        # output sample 2m + r takes tap j from input m + (r + p - j) / 2 when that is whole
        taps = [(r, j, (r + p - j) // 2) for r in (0, 1) for j in range(k) if (r + p - j) % 2 == 0]
        shifts = sorted({s for _, _, s in taps})
        weight = self.weight.view(g, cin, co, k)
        packed = x.new_zeros(g, 2, co, len(shifts), cin)
        for r, j, s in taps:
            packed[:, r, :, shifts.index(s), :] += weight[..., j].transpose(1, 2)
        batch, _, length = x.shape
        lo, hi = -min(shifts), max(shifts)
        padded = F.pad(x, (lo, hi)).view(batch, g, cin, length + lo + hi)
        stacked = torch.cat([padded[..., lo + s: lo + s + length] for s in shifts], dim=2)   # [B,g,S*cin,L]
        stacked = stacked.view(batch * g, len(shifts) * cin, length)
        packed = packed.view(1, g, 2 * co, len(shifts) * cin).expand(batch, -1, -1, -1)
        out = torch.bmm(packed.reshape(batch * g, 2 * co, len(shifts) * cin), stacked)
        out = out.view(batch, g, 2, co, length)
        return out + self.bias.view(1, g, 1, co, 1) if bias else out


class MCNN(nn.Module):
    """Log-mel ``[B, M, F]`` (and ``f0 [B]`` Hz with excitation) to waveform ``[B, F * hop]``."""

    NOISE_LENGTH = 1 << 15

    def __init__(self, cfg: MCNNConfig):
        super().__init__()
        self.cfg = cfg
        h, k = cfg.heads, cfg.kernel_size
        # per head: one output channel, or a harmonic gain and a noise gain for each of its bands
        last = 2 * cfg.bands_per_head if cfg.excitation else 1
        widths = cfg.channels + [last]
        layers = []
        for i, width in enumerate(widths):
            # the first layer reads every mel band in every head; later layers stay within a head
            in_ch = cfg.n_mels if i == 0 else h * widths[i - 1]
            layers.append(Upsample2(in_ch, h * width, k, groups=1 if i == 0 else h))
        self.layers = nn.ModuleList(layers)
        self.head_scale = nn.Parameter(torch.full((h,), 1.0 if cfg.excitation else 1.0 / h))
        # scaled softsign a * softsign(x / a): nearly linear at the levels of real notes
        self.out_gain = nn.Parameter(torch.tensor(4.0 if cfg.excitation else 1.0))
        if cfg.excitation:
            self.register_buffer("edges", torch.tensor(cfg.band_edges(), dtype=torch.float64), persistent=False)
            self.register_buffer("noise", band_noise(cfg, self.NOISE_LENGTH), persistent=False)
            # frame-rate log gains read straight off the mel; the heads add sample-rate detail
            self.envelope = nn.Conv1d(cfg.n_mels, 2 * cfg.n_bands, 1)
            self._init_envelope()
            with torch.no_grad():
                layers[-1].weight.mul_(0.1)
                layers[-1].bias.zero_()

    def _init_envelope(self) -> None:
        """Start each band's log gains at the mean log-mel of the mel bands inside it."""
        from waeserver.spectral import hz_to_mel, mel_to_hz

        cfg = self.cfg
        nyquist = cfg.sample_rate / 2
        low, high = hz_to_mel(np.array([30.0, nyquist]))
        centres = mel_to_hz(np.linspace(low, high, cfg.n_mels + 2))[1:-1]
        edges = cfg.band_edges()
        weight = torch.zeros(2 * cfg.n_bands, cfg.n_mels)
        for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            inside = np.nonzero((centres >= lo) & (centres < hi))[0]
            if inside.size == 0:
                inside = np.array([int(np.argmin(np.abs(centres - (lo + hi) / 2)))])
            for kind in (0, 1):
                weight[2 * b + kind, inside] = cfg.mel_scale / inside.size
        with torch.no_grad():
            self.envelope.weight.copy_(weight[..., None])
            # calibrated by eye on a few notes; noise starts quieter
            self.envelope.bias.copy_(torch.tensor([cfg.mel_offset - 0.5, cfg.mel_offset - 3.0] * cfg.n_bands))

    def harmonic_sources(self, f0: torch.Tensor, length: int) -> torch.Tensor:
        """Band-limited harmonic sources ``[B, n_bands, T]`` at ``f0 [B]`` Hz, unit RMS where not empty.

        Band ``b`` holds the harmonics ``k * f0`` that fall within its edges (and below Nyquist),
        all of amplitude one, summed in closed form: with ``K_j`` the first harmonic at or above
        edge ``j``, ``sum_{k=K_b..K_{b+1}-1} sin(k phi) = (C_b - C_{b+1}) / (2 sin(phi / 2))``
        where ``C_j = cos((K_j - 1/2) phi)``; adjacent bands share their boundary term.
        """
        raw, norm = self._harmonic_parts(f0, length)
        return raw * norm[..., None]

    def _harmonic_parts(self, f0: torch.Tensor, length: int,
                        split: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The band sums ``[B, n_bands, T]`` before normalisation, and each band's normaliser ``[B, n_bands]``.

        With ``split``, the sums come as ``[B, 2, n_bands, T / 2]``: even samples, then odd ones.
        """
        sr = self.cfg.sample_rate
        f0 = f0.to(torch.float64).clamp(min=1.0)[:, None]                          # [B,1]
        top = torch.floor((sr / 2 - 1e-6) / f0)                                    # highest harmonic below Nyquist
        first = torch.minimum(torch.ceil(self.edges[None, :] / f0).clamp(min=1), top + 1)  # [B,bands+1]
        count = (first[:, 1:] - first[:, :-1]).float()
        t = torch.arange(length, device=f0.device, dtype=torch.float64)
        if split:
            t = t.view(-1, 2).T.reshape(-1)
        # the phase is wrapped in float64, so it stays exact over long notes; the trig runs in float32
        phi = (torch.remainder(f0 * t[None, :] / sr, 1.0) * (2 * math.pi)).to(torch.float32)
        if split:
            phi = phi.view(-1, 2, 1, length // 2)
        else:
            phi = phi.view(-1, 1, length)
        shape = first.shape[:1] + (1,) * (phi.dim() - 3) + first.shape[1:] + (1,)
        bound = torch.cos((first.float() - 0.5).view(shape) * phi)                # [B,(2,)bands+1,T]
        half = torch.sin(phi / 2)
        # at phi = 0 every sine is zero; elsewhere |sin(phi/2)| is far from 0 at audio rates
        inv = torch.where(half.abs() < 1e-4, torch.zeros_like(half), 0.5 / half)
        norm = torch.where(count > 0, (2.0 / count.clamp(min=1)).sqrt(), torch.zeros_like(count))
        return (bound[..., :-1, :] - bound[..., 1:, :]) * inv, norm

    def noise_sources(self, length: int) -> torch.Tensor:
        """The fixed band-limited noise tables, tiled to ``[n_bands, T]``."""
        reps = -(-length // self.noise.shape[-1])
        return self.noise.repeat(1, reps)[:, :length]

    def forward(self, logmel: torch.Tensor, f0: torch.Tensor | None = None) -> torch.Tensor:
        normed = (logmel - self.cfg.mel_offset) / self.cfg.mel_scale
        x = normed
        for layer in self.layers[:-1]:
            x = F.elu(layer(x))
        if not self.cfg.excitation:
            heads = self.layers[-1](x)                                                  # [B,H,T]
            summed = (heads * self.head_scale.view(1, -1, 1)).sum(dim=1)
            return self.out_gain * F.softsign(summed)
        if f0 is None:
            raise ValueError("this MCNN needs the note's f0 (Hz) as well as its log-mel")
        # The last layer's even and odd samples stay apart (r = 0, 1: sample 2l + r) until the
        # waveform, and everything at sample rate is computed in that order.
        heads = self.layers[-1].phases(x, bias=False)                                   # [B,H,2,n*2,L]
        batch, h, _, _, half = heads.shape
        n, hop = self.cfg.bands_per_head, self.cfg.hop_length
        length = 2 * half
        # Constant factors go into the log gains at frame rate, where they are cheap: each band's
        # normaliser and its head's scale. Only the scale's size counts: flipping the sign of a
        # band-limited source leaves its spectrum as it is.
        raw, norm = self._harmonic_parts(f0, length, split=True)                      # [B,2,bands,L]
        scale = self.head_scale.abs().repeat_interleave(n).view(1, -1)                  # [1,bands]
        log_coef = torch.stack([torch.log((norm * scale).clamp(min=1e-30)),
                                torch.log(scale.clamp(min=1e-30)).expand(batch, -1)], dim=2)
        log_coef = log_coef.view(batch, -1) + self.layers[-1].bias                      # the heads' bias too
        env = self.envelope(normed) + log_coef[..., None]                              # [B,bands*2,F]
        frames = env.shape[-1]
        # frame f is centred on sample f * hop: between two centres the log gain moves linearly
        step = F.pad(env, (0, 1), mode="replicate")[..., 1:] - env
        shape = (batch, h, 1, n, 2, frames, 1)
        start, step = env.view(shape), step.view(shape)
        ramp = (torch.arange(hop // 2, device=env.device, dtype=env.dtype) * 2
                + torch.arange(2, device=env.device, dtype=env.dtype)[:, None]) / hop    # [2, hop/2]
        ramp = ramp.view(1, 1, 2, 1, 1, 1, hop // 2)
        log_gains = heads.view(batch, h, 2, n, 2, frames, hop // 2)
        if torch.is_grad_enabled():
            gains = torch.exp(torch.addcmul(log_gains + start, step, ramp).clamp(max=10.0))
        else:  # in place: at run time these are the largest tensors of the pass
            gains = log_gains.add_(start).addcmul_(step, ramp).clamp_(max=10.0).exp_()
        gains = gains.view(batch, h, 2, n, 2, half)                                    # [B,H,r,n,(harm,noise),L]
        harmonic = raw.view(batch, 2, h, n, half).transpose(1, 2)                       # [B,H,r,n,L]
        noise = self.noise_sources(length).view(h, n, half, 2).permute(0, 3, 1, 2)    # [H,r,n,L]
        # one dimension at a time: a reduction over two strided dimensions at once is ~10x slower
        summed = (gains[..., 0, :] * harmonic).sum(3).sum(1) + (gains[..., 1, :] * noise).sum(3).sum(1)
        wave = summed.transpose(1, 2).reshape(batch, length)                            # interleave r
        return self.out_gain * F.softsign(wave / self.out_gain)


def band_noise(cfg: MCNNConfig, length: int) -> torch.Tensor:
    """``[n_bands, length]`` white noise band-passed to each band (unit RMS), the same on every machine."""
    gen = torch.Generator().manual_seed(cfg.noise_seed)
    spec = torch.fft.rfft(torch.randn(length, generator=gen, dtype=torch.float64))
    freqs = torch.fft.rfftfreq(length, 1.0 / cfg.sample_rate, dtype=torch.float64)
    edges = cfg.band_edges()
    bands = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = torch.fft.irfft(spec * ((freqs >= lo) & (freqs < hi)), n=length)
        bands.append(band / band.pow(2).mean().sqrt().clamp(min=1e-12))
    return torch.stack(bands).float()


def midi_to_f0(pitch: torch.Tensor) -> torch.Tensor:
    """MIDI pitch ``[B]`` (int or float) to Hz."""
    return 440.0 * torch.pow(2.0, (pitch.to(torch.float32) - 69) / 12)


@dataclass
class MCNNTrainConfig:
    """How an MCNN is trained: random crops of notes, multi-resolution spectral losses."""

    steps: int = 6000
    max_minutes: float = 0.0           # stop early after this wall time (0: no limit); resumable
    batch_size: int = 16
    crop_frames: int = 32
    lr: float = 2e-3
    lr_final: float = 2e-4             # cosine decay from lr to lr_final over `steps`
    phase_weight: float = 0.0
    seed: int = 0
    init: str = ""                     # start from this trained MCNN (folder or .safetensors), e.g. another dataset's
    checkpoint_every: int = 200
    log_every: int = 25
    model: dict = field(default_factory=dict)  # MCNNConfig overrides

    @classmethod
    def from_dict(cls, data: dict) -> "MCNNTrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MCNN training settings: {', '.join(sorted(unknown))}")
        return cls(**data)


def load_split(ds, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-mels ``[N, M, F]``, real waveforms ``[N, T]`` and MIDI pitches ``[N]`` of one split."""
    idx = ds.indices(split)
    feats = np.ascontiguousarray(ds.features()[idx])
    audio = np.stack([ds.audio(int(i)) for i in idx]).astype(np.float32)
    return feats, audio, ds.labels(idx)["pitch"]


def random_crops(feats: np.ndarray, audio: np.ndarray, pitch: np.ndarray, batch: int, frames: int,
                 hop: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aligned crops: log-mel ``[B, M, frames]``, wave ``[B, frames * hop]`` and f0 ``[B]`` Hz.

    Frame ``f`` is centred on sample ``f * hop``, so frames ``a..a+n`` pair with samples
    ``a*hop .. (a+n)*hop``; the network learns the half-window offset itself.
    """
    items = rng.integers(0, len(feats), batch)
    # notes decay, so starts are drawn from the louder first two thirds more often
    starts = np.minimum(rng.integers(0, feats.shape[-1] - frames + 1, batch),
                        rng.integers(0, feats.shape[-1] - frames + 1, batch))
    mel = np.stack([feats[i, :, s:s + frames] for i, s in zip(items, starts)])
    wave = np.stack([audio[i, s * hop:(s + frames) * hop] for i, s in zip(items, starts)])
    return torch.from_numpy(mel), torch.from_numpy(wave), midi_to_f0(torch.from_numpy(pitch[items]))


def save_mcnn(model: MCNN, path: Path) -> None:
    """Weights to ``path`` (safetensors) and the config to ``path.with_suffix('.yaml')``."""
    import yaml
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_suffix(".yaml").write_text(yaml.safe_dump(model.cfg.to_dict(), sort_keys=False))


def load_mcnn(path: str | Path, device: str | torch.device = "cpu") -> MCNN:
    """An MCNN written by :func:`save_mcnn` (``mcnn.safetensors`` plus ``mcnn.yaml``)."""
    import yaml
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "mcnn.safetensors"
    cfg = MCNNConfig.from_dict(yaml.safe_load(path.with_suffix(".yaml").read_text()))
    model = MCNN(cfg)
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()


@torch.no_grad()
def evaluate_mcnn(model: MCNN, feats: np.ndarray, audio: np.ndarray, pitch: np.ndarray, spectral,
                  batch: int = 8) -> dict:
    """Mean spectral convergence and log-spectral distance (dB) of whole notes against the real audio."""
    from waeserver.spectral import log_spectral_distance, spectral_convergence, stft_magnitude

    device = next(model.parameters()).device
    sc, lsd = [], []
    for start in range(0, len(feats), batch):
        mel = torch.from_numpy(np.ascontiguousarray(feats[start:start + batch])).to(device)
        real = torch.from_numpy(audio[start:start + batch]).to(device)
        pred = model(mel, midi_to_f0(torch.from_numpy(pitch[start:start + batch])).to(device))
        pm, tm = stft_magnitude(pred, spectral), stft_magnitude(real, spectral)
        sc.append(spectral_convergence(pm, tm))
        lsd.append(log_spectral_distance(pm, tm))
    return {"sc": float(torch.cat(sc).mean()), "lsd_db": float(torch.cat(lsd).mean())}


def train_mcnn(data_dir: str | Path, out_dir: str | Path, config: MCNNTrainConfig | dict | None = None,
               device: str | torch.device = "cpu", resume: bool = False, progress: bool = True) -> dict:
    """Train an MCNN on a dataset's real audio; returns the final validation metrics.

    Writes ``out_dir/``: ``checkpoint.pt`` (model, optimiser, step; tensors only), ``metrics.csv``,
    ``mcnn.safetensors`` + ``mcnn.yaml`` (the result) and ``metrics.yaml`` (final validation).
    With ``resume``, training continues from the checkpoint; a finished run is left as it is.
    """
    import yaml
    from tqdm import tqdm

    from waeserver.dataset import NoteDataset
    from waeserver.stft_loss import MultiResolutionSTFTLoss

    if isinstance(config, dict):
        config = MCNNTrainConfig.from_dict(config)
    config = config or MCNNTrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = NoteDataset(data_dir)
    spectral = ds.spectral
    feats, audio, pitch = load_split(ds, "train")
    valid = load_split(ds, "valid")

    torch.manual_seed(config.seed)
    ckpt_path = out / "checkpoint.pt"
    state = None
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model_cfg = MCNNConfig.from_dict(yaml.safe_load(state_cfg_path(out).read_text()))
    elif config.init:
        model_cfg = load_mcnn(config.init).cfg
        if model_cfg.sample_rate != spectral.sample_rate or model_cfg.hop_length != spectral.hop_length:
            raise ValueError(f"{config.init} was trained for another sample rate or hop than {data_dir}")
        state_cfg_path(out).write_text(yaml.safe_dump(model_cfg.to_dict(), sort_keys=False))
    else:
        # normalise the input with the training features' own statistics
        overrides = dict(config.model)
        overrides.setdefault("mel_offset", float(feats.mean()))
        overrides.setdefault("mel_scale", float(feats.std()))
        model_cfg = MCNNConfig(n_mels=spectral.n_mels, hop_length=spectral.hop_length,
                               sample_rate=spectral.sample_rate, **overrides)
        state_cfg_path(out).write_text(yaml.safe_dump(model_cfg.to_dict(), sort_keys=False))
    model = MCNN(model_cfg).to(device)
    loss_fn = MultiResolutionSTFTLoss(phase_weight=config.phase_weight).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    step = 0
    if state is None and config.init:
        model.load_state_dict(load_mcnn(config.init).state_dict())
        log.info("MCNN: starting from %s", config.init)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log.info("MCNN: resuming at step %d", step)
    rng = np.random.default_rng(config.seed + step)

    def lr_at(s: int) -> float:
        t = min(s / max(config.steps, 1), 1.0)
        return config.lr_final + 0.5 * (config.lr - config.lr_final) * (1 + math.cos(math.pi * t))

    def checkpoint() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "step": torch.tensor(step)}, tmp)
        tmp.replace(ckpt_path)

    metrics_path = out / "metrics.csv"
    new_file = not metrics_path.is_file() or state is None
    if not new_file:
        # rows logged after the checkpoint we resume from are about to be logged again
        rows = metrics_path.read_text().splitlines()
        kept = [rows[0]] + [r for r in rows[1:] if int(r.split(",")[0]) <= step]
        metrics_path.write_text("\n".join(kept) + "\n")
    started = time.monotonic()
    with open(metrics_path, "w" if new_file else "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow(["step", "loss", "sc", "mag", "phase", "lr", "seconds"])
        bar = tqdm(total=config.steps, initial=step, desc="MCNN", unit="step", disable=not progress)
        model.train()
        while step < config.steps:
            if config.max_minutes and time.monotonic() - started > 60 * config.max_minutes:
                log.info("MCNN: time budget of %.1f min spent at step %d", config.max_minutes, step)
                break
            mel, wave, f0 = random_crops(feats, audio, pitch, config.batch_size, config.crop_frames,
                                         spectral.hop_length, rng)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss, parts = loss_fn(model(mel.to(device), f0.to(device)), wave.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            bar.update(1)
            if step % config.log_every == 0:
                writer.writerow([step, f"{loss.item():.5f}", f"{parts['sc'].item():.5f}",
                                 f"{parts['mag'].item():.5f}", f"{float(parts['phase']):.5f}",
                                 f"{lr_at(step):.2e}", f"{time.monotonic() - started:.1f}"])
                fh.flush()
                bar.set_postfix(loss=f"{loss.item():.3f}", sc=f"{parts['sc'].item():.3f}")
            if step % config.checkpoint_every == 0:
                checkpoint()
        bar.close()
    checkpoint()
    model.eval()
    save_mcnn(model, out / "mcnn.safetensors")
    result = evaluate_mcnn(model, *valid, spectral)
    result["step"] = step
    (out / "metrics.yaml").write_text(yaml.safe_dump(result, sort_keys=False))
    log.info("MCNN: step %d, validation SC %.3f, LSD %.2f dB", step, result["sc"], result["lsd_db"])
    return result


def state_cfg_path(out: Path) -> Path:
    """Where a training run keeps the MCNN config it started with (resume needs the same one)."""
    return out / "mcnn_config.yaml"
