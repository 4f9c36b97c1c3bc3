"""The WAE-Fader: encoder, conditional decoder (AdaIN + FiLM), Fader discriminator.

Shapes: ``B`` batch, ``M`` mel bands, ``F`` frames, ``D`` latent size, ``S`` styles.
Mel bands are treated as channels and frames as time (``Conv1d``), which keeps the decoder fast
enough to render one note in about a millisecond on a CPU core.

The model works on real log-mels at both ends: the encoder normalises its input with the affine
``(mel - mel_offset) / mel_scale`` of its :class:`ModelConfig`, and the decoder undoes it, so a
trained model needs nothing from its dataset to be used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from waeserver.dsp.pitch import N_OCTAVES, N_PITCH_CLASSES, octave_of, pitch_class
from waeserver.settings import from_plain

VARIANTS = ("wae-mmd", "wae-note", "wae-style", "wae-fader")


@dataclass
class ModelConfig:
    """Plain data describing one auto-encoder; ``to_dict``/``from_dict`` round-trip through YAML."""

    n_mels: int = 128
    n_frames: int = 128
    latent: int = 3
    n_styles: int = 1
    variant: str = "wae-fader"
    use_velocity: bool = True          # dynamics (MIDI velocity / 127) as a decoder condition
    enc_channels: int = 64             # encoder Conv1d width
    dec_channels: int = 96             # decoder Conv1d width
    start_frames: int = 8              # the decoder starts from this many frames, doubling to n_frames
    embed_dim: int = 32                # size of each condition embedding (pitch class, octave, style, velocity)
    hidden: int = 256                  # width of the decoder's mapping MLP and of the discriminator
    mel_offset: float = 0.0            # log-mel normalisation: (mel - offset) / scale
    mel_scale: float = 1.0

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; one of {', '.join(VARIANTS)}")
        if self.latent < 1 or self.n_styles < 1:
            raise ValueError("latent size and number of styles must be at least 1")
        ups = self.n_frames // self.start_frames
        if self.n_frames % self.start_frames or ups & (ups - 1):
            raise ValueError(f"n_frames {self.n_frames} must be start_frames {self.start_frames} "
                             "times a power of two")

    @property
    def uses_pitch(self) -> bool:
        return self.variant != "wae-mmd"

    @property
    def uses_style(self) -> bool:
        return self.variant in ("wae-style", "wae-fader")

    @property
    def uses_discriminator(self) -> bool:
        return self.variant == "wae-fader"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return from_plain(cls, data, "model settings")


def style_onehot(style: torch.Tensor, n_styles: int) -> torch.Tensor:
    """Style indices ``[B]`` int64 to fader weights ``[B,S]`` float32: each note's own style at 1."""
    return F.one_hot(style, n_styles).float()


class Encoder(nn.Module):
    """Log-mel ``[B, M, F]`` to latent ``[B, D]``; unconditional, strided Conv1d with batch-norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.offset, self.scale = cfg.mel_offset, cfg.mel_scale
        c = cfg.enc_channels
        layers, in_ch, frames = [], cfg.n_mels, cfg.n_frames
        while frames > cfg.start_frames:
            layers += [nn.Conv1d(in_ch, c, 4, stride=2, padding=1), nn.BatchNorm1d(c), nn.LeakyReLU(0.2)]
            in_ch, frames = c, frames // 2
        self.convs = nn.Sequential(*layers)
        # no batch-norm in the head: z must not depend on the batch it was computed in
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * frames, cfg.hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(cfg.hidden, cfg.latent))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs((mel - self.offset) / self.scale))


class AdaIN(nn.Module):
    """Instance-norm over time, then a per-channel scale and shift computed from the condition ``w``."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm1d(channels, affine=False)
        self.affine = nn.Linear(w_dim, 2 * channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, shift = self.affine(w).unsqueeze(-1).chunk(2, dim=1)
        return self.norm(x) * (1 + scale) + shift


class FiLM(nn.Module):
    """Feature-wise linear modulation: ``x * (1 + scale(w)) + shift(w)``, per channel, no normalisation."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.affine = nn.Linear(w_dim, 2 * channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, shift = self.affine(w).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + scale) + shift


class UpBlock(nn.Module):
    """Double the frames: transposed conv, AdaIN, activation, conv, FiLM, activation. ``[B,C,t] -> [B,C,2t]``."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.up = nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1)
        self.adain = AdaIN(channels, w_dim)
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)
        self.film = FiLM(channels, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.adain(self.up(x), w), 0.2)
        return F.leaky_relu(self.film(self.conv(x), w), 0.2)


class Conditions(nn.Module):
    """The decoder's note and style controls as one vector ``[B, E * parts]`` (unused by ``wae-mmd``).

    Pitch class and octave come from learned tables; the style is ``weights @ table``, linear in
    the fader weights so that mixes and over-drive (weights up to 2) land between and beyond the
    learned style points; velocity (0..1) enters through a linear map.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        e = cfg.embed_dim
        self.dim = 0
        if cfg.uses_pitch:
            self.pitch_class = nn.Embedding(N_PITCH_CLASSES, e)
            self.octave = nn.Embedding(N_OCTAVES, e)
            self.dim += 2 * e
            if cfg.use_velocity:
                self.velocity = nn.Linear(1, e)
                self.dim += e
        if cfg.uses_style:
            self.style = nn.Parameter(torch.randn(cfg.n_styles, e))
            self.dim += e

    def forward(self, pitch: torch.Tensor, style: torch.Tensor | None, velocity: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.cfg.uses_pitch:
            parts += [self.pitch_class(pitch_class(pitch)), self.octave(octave_of(pitch))]
            if self.cfg.use_velocity:
                parts.append(self.velocity(velocity.reshape(-1, 1).to(self.velocity.weight.dtype)))
        if self.cfg.uses_style:
            parts.append(style.to(self.style.dtype) @ self.style)
        return torch.cat(parts, dim=1)


class Decoder(nn.Module):
    """``z [B,D]``, pitch ``[B]`` int64 MIDI, style ``[B,S]`` float weights, velocity ``[B]`` 0..1
    -> log-mel ``[B,M,F]``.

    A mapping MLP turns ``[z, conditions]`` into ``w``; ``w`` sets the first ``start_frames``
    frames and, through AdaIN and FiLM, every up-sampling block. Inputs a variant does not use
    are ignored (and may be ``None``); a missing velocity is taken as MIDI 100.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.offset, self.scale = cfg.mel_offset, cfg.mel_scale
        self.conditions = Conditions(cfg)
        h, c = cfg.hidden, cfg.dec_channels
        self.mapping = nn.Sequential(nn.Linear(cfg.latent + self.conditions.dim, h), nn.LeakyReLU(0.2),
                                     nn.Linear(h, h), nn.LeakyReLU(0.2))
        self.start = nn.Linear(h, c * cfg.start_frames)
        n_blocks = (cfg.n_frames // cfg.start_frames).bit_length() - 1
        self.blocks = nn.ModuleList(UpBlock(c, h) for _ in range(n_blocks))
        self.out = nn.Conv1d(c, cfg.n_mels, 3, padding=1)

    def forward(self, z: torch.Tensor, pitch: torch.Tensor | None = None, style: torch.Tensor | None = None,
                velocity: torch.Tensor | None = None) -> torch.Tensor:
        batch = z.shape[0]
        parts = [z]
        if self.cfg.uses_pitch:
            if pitch is None:
                raise ValueError(f"{self.cfg.variant} needs a pitch")
            if self.cfg.use_velocity and velocity is None:
                velocity = torch.full((batch,), 100 / 127, device=z.device)
            if self.cfg.uses_style and style is None:
                raise ValueError(f"{self.cfg.variant} needs style weights")
            parts.append(self.conditions(pitch, style, velocity))
        w = self.mapping(torch.cat(parts, dim=1))
        x = F.leaky_relu(self.start(w).view(batch, self.cfg.dec_channels, self.cfg.start_frames), 0.2)
        for block in self.blocks:
            x = block(x, w)
        return self.out(x) * self.scale + self.offset


class Discriminator(nn.Module):
    """Fader discriminator: latent ``[B,D]`` to style logits ``[B,S]``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.hidden
        self.net = nn.Sequential(nn.Linear(cfg.latent, h), nn.LeakyReLU(0.2), nn.Linear(h, h),
                                 nn.LeakyReLU(0.2), nn.Linear(h, cfg.n_styles))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class WAE(nn.Module):
    """The auto-encoder of one variant: ``.encoder``, ``.decoder`` and, for ``wae-fader``, ``.discriminator``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.discriminator = Discriminator(cfg) if cfg.uses_discriminator else None

    def forward(self, mel: torch.Tensor, pitch: torch.Tensor | None = None, style: torch.Tensor | None = None,
                velocity: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct: log-mel ``[B,M,F]`` -> (reconstruction ``[B,M,F]``, z ``[B,D]``)."""
        z = self.encoder(mel)
        return self.decoder(z, pitch, style, velocity), z
