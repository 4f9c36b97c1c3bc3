"""Fine-tuning: the decoder trained further through a frozen real-time inverter, against the real audio.

For a training note, the frozen encoder gives ``z``; the decoder turns ``z`` and the note's
labels into a log-mel; the frozen inverter turns a random crop of it into a waveform, which is
compared with the same crop of the real recording by multi-resolution spectral losses. A small
log-mel term keeps the decoder's output a spectrogram (the inverter was trained on real ones, and
the Griffin-Lim path and the evaluation read the decoder's mels too).

Shapes: log-mel ``[B, M, F]``, waveform crops ``[B, crop_frames * hop]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from waeserver.dsp.pitch import midi_to_f0
from waeserver.model.training_run import RunFolder, clipped_step, run_steps, save_weights, step_settings
from waeserver.model.wae import WAE, style_onehot
from waeserver.settings import from_plain
from waeserver.sound.inverter_training import load_split
from waeserver.sound.inverters import describe

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    steps: int = 400
    max_minutes: float = 0.0           # stop early after this wall time (0: no limit); resumable
    batch_size: int = 8
    crop_frames: int = 32
    lr: float = 1e-4
    mel_weight: float = 1.0            # weight of the log-mel L1 anchor
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneConfig:
        return from_plain(cls, data, "fine-tuning settings")


def note_tensors(ds, split: str, n_styles: int) -> dict[str, torch.Tensor]:
    """A split as tensors: mel ``[N,M,F]``, wave ``[N,T]``, pitch ``[N]``, style one-hot ``[N,S]``, velocity ``[N]``."""
    feats, audio, _ = load_split(ds, split)
    labels = ds.labels(ds.indices(split))
    return {"mel": torch.from_numpy(feats), "wave": torch.from_numpy(audio),
            "pitch": torch.from_numpy(labels["pitch"]),
            "style": style_onehot(torch.from_numpy(labels["style"]), n_styles),
            "velocity": torch.from_numpy(labels["velocity"]).float() / 127}


@torch.no_grad()
def audio_metrics(wae: WAE, inverter: nn.Module, notes: dict, spectral, batch: int = 8) -> dict:
    """Spectral convergence and log-spectral distance (dB) of encoder -> decoder -> inverter audio vs real."""
    from waeserver.dsp.spectral import log_spectral_distance, spectral_convergence, stft_magnitude

    device = next(inverter.parameters()).device
    sc, lsd = [], []
    for s in range(0, len(notes["mel"]), batch):
        part = {k: v[s:s + batch].to(device) for k, v in notes.items()}
        z = wae.encoder(part["mel"])
        mel = wae.decoder(z, part["pitch"], part["style"], part["velocity"])
        wave = inverter(mel, midi_to_f0(part["pitch"]))
        pm, tm = stft_magnitude(wave, spectral), stft_magnitude(part["wave"], spectral)
        sc.append(spectral_convergence(pm, tm))
        lsd.append(log_spectral_distance(pm, tm))
    return {"sc": round(float(torch.cat(sc).mean()), 4), "lsd_db": round(float(torch.cat(lsd).mean()), 3)}


COLUMNS = ["step", "loss", "sc", "mag", "mel", "seconds"]


def _only_the_decoder_learns(wae: WAE, inverter: nn.Module) -> nn.Module:
    """Everything frozen and in eval mode but ``wae.decoder``, which is returned."""
    wae.eval().requires_grad_(False)
    inverter.eval().requires_grad_(False)
    return wae.decoder.requires_grad_(True)


@torch.no_grad()
def _latents(wae: WAE, mel: torch.Tensor, device) -> torch.Tensor:
    """The frozen encoder's z ``[N, D]`` of log-mels ``[N, M, F]``, 64 notes at a time."""
    return torch.cat([wae.encoder(mel[s:s + 64].to(device)) for s in range(0, len(mel), 64)])


def finetune_decoder(wae: WAE, inverter: nn.Module, data_dir: str | Path, out_dir: str | Path,
                     config: FinetuneConfig | dict | None = None, resume: bool = False,
                     progress: bool = True) -> dict:
    """Fine-tune ``wae.decoder`` in place through the frozen ``inverter``; returns before/after metrics.

    Writes ``out_dir/``: ``checkpoint.pt`` (decoder, optimiser, step), ``metrics.csv``,
    ``decoder.safetensors`` (the result) and ``metrics.yaml``. With ``resume``, training continues
    from the checkpoint (of the same settings but ``training_run.RESUMABLE``, the same model config and
    inverter; another's is refused).
    """
    import yaml

    from waeserver.data.dataset import NoteDataset
    from waeserver.dsp.stft_loss import MultiResolutionSTFTLoss

    if isinstance(config, dict):
        config = FinetuneConfig.from_dict(config)
    config = config or FinetuneConfig()
    out = Path(out_dir)
    run = RunFolder(out, {**step_settings(config), "model": wae.cfg.to_dict(), "inverter": describe(inverter)})
    state = run.load() if resume else None
    out.mkdir(parents=True, exist_ok=True)
    ds = NoteDataset(data_dir)
    hop = ds.spectral.hop_length
    device = next(inverter.parameters()).device
    train_notes = note_tensors(ds, "train", wae.cfg.n_styles)
    valid_notes = note_tensors(ds, "valid", wae.cfg.n_styles)
    decoder = _only_the_decoder_learns(wae, inverter)
    z_train = _latents(wae, train_notes["mel"], device)
    opt = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    loss_fn = MultiResolutionSTFTLoss().to(device)
    first = 0
    if state is not None:
        decoder.load_state_dict(state["decoder"])
        opt.load_state_dict(state["optimizer"])
        first = int(state["step"])
        before = {"sc": float(state["before_sc"]), "lsd_db": float(state["before_lsd"])}
        log.info("fine-tuning: resuming at step %d", first)
    else:
        before = audio_metrics(wae, inverter, valid_notes, ds.spectral)
    rng = np.random.default_rng(config.seed + first)
    n_frames = train_notes["mel"].shape[-1]

    def train_step(step: int) -> dict:
        idx = torch.from_numpy(rng.integers(0, len(z_train), config.batch_size))
        start = int(rng.integers(0, n_frames - config.crop_frames + 1))
        mel = decoder(z_train[idx], train_notes["pitch"][idx].to(device),
                      train_notes["style"][idx].to(device), train_notes["velocity"][idx].to(device))
        crop = mel[..., start:start + config.crop_frames]
        wave = inverter(crop, midi_to_f0(train_notes["pitch"][idx]).to(device))
        real = train_notes["wave"][idx, start * hop:(start + config.crop_frames) * hop].to(device)
        spec_loss, parts = loss_fn(wave, real)
        mel_loss = (mel - train_notes["mel"][idx].to(device)).abs().mean()
        loss = spec_loss + config.mel_weight * mel_loss
        clipped_step(opt, loss, decoder.parameters())
        return {"loss": loss, "sc": parts["sc"], "mag": parts["mag"], "mel": mel_loss}

    def checkpoint(step: int) -> None:
        run.save({"decoder": decoder.state_dict(), "optimizer": opt.state_dict(), "step": torch.tensor(step),
                  "before_sc": torch.tensor(before["sc"]), "before_lsd": torch.tensor(before["lsd_db"])})

    decoder.train()
    with run.metrics(COLUMNS, first if state is not None else None) as metrics:
        step = run_steps(first, config.steps, train_step, checkpoint, metrics, log_every=config.log_every,
                         checkpoint_every=config.checkpoint_every, max_minutes=config.max_minutes,
                         desc="fine-tune", progress=progress)
    decoder.eval().requires_grad_(False)
    save_weights(decoder, out / "decoder.safetensors")
    after = audio_metrics(wae, inverter, valid_notes, ds.spectral)
    result = {"steps": step, "valid_before": before, "valid_after": after}
    (out / "metrics.yaml").write_text(yaml.safe_dump(result, sort_keys=False))
    log.info("fine-tuning: validation SC %.3f -> %.3f, LSD %.2f -> %.2f dB", before["sc"], after["sc"],
             before["lsd_db"], after["lsd_db"])
    return result
