"""Training a real-time inverter on a dataset's real audio: random crops, multi-resolution losses.

Any kind of :mod:`waeserver.sound.inverters` trains the same way: random crops of ``crop_frames``
frames of the training split (log-mel, the matching stretch of the recording, the note's f0),
``MultiResolutionSTFTLoss`` between the inverter's waveform and the recording, Adam with a cosine
decay, gradient clipping at 1, in the step loop of :mod:`waeserver.model.training_run` (an atomic
checkpoint every ``checkpoint_every`` steps, a ``metrics.csv`` that resumes, a wall-time budget).

Shapes: crops of log-mel ``[B, M, crop_frames]``, wave ``[B, crop_frames * hop]``, f0 ``[B]`` Hz.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from waeserver.dsp.pitch import midi_to_f0
from waeserver.model.training_run import RunFolder, clipped_step, cosine_lr, run_steps, set_lr, step_settings
from waeserver.settings import from_plain
from waeserver.sound.inverters import DEFAULT_KIND, build_inverter, describe, load_inverter, new_inverter, save_inverter

log = logging.getLogger(__name__)


@dataclass
class InverterTrainConfig:
    """How an inverter is trained. ``model`` overrides the kind's default config."""

    kind: str = DEFAULT_KIND
    steps: int = 6000
    max_minutes: float = 0.0           # stop early after this wall time (0: no limit); resumable
    batch_size: int = 16
    crop_frames: int = 32
    lr: float = 2e-3
    lr_final: float = 2e-4             # cosine decay from lr to lr_final over `steps`
    phase_weight: float = 0.0
    mel_weight: float = 0.0            # weight of the log-mel distance (LogMelLoss) beside the STFT losses
    seed: int = 0
    init: str = ""                     # start from this trained inverter of the same kind (folder or file)
    checkpoint_every: int = 200
    log_every: int = 25
    model: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> InverterTrainConfig:
        return from_plain(cls, data, "inverter training settings")


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


@torch.no_grad()
def evaluate_inverter(model: nn.Module, feats: np.ndarray, audio: np.ndarray, pitch: np.ndarray, spectral,
                      batch: int = 8) -> dict:
    """Mean spectral convergence and log-spectral distance (dB) of whole notes against the real audio."""
    from waeserver.dsp.spectral import log_spectral_distance, spectral_convergence, stft_magnitude

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


def _new_inverter(config: InverterTrainConfig, ds, feats: np.ndarray) -> nn.Module:
    """The inverter a run starts from: the ``init`` one with the ``model`` overrides, or a new one
    sized for the dataset and normalised with its training features' statistics."""
    spectral = ds.spectral
    if config.init:
        start = load_inverter(config.init)
        meta = describe(start)
        if meta["kind"] != config.kind:
            raise ValueError(f"{config.init} is a {meta['kind']} inverter, not {config.kind}")
        model = new_inverter(config.kind, {**meta["config"], **config.model})
        if model.cfg.sample_rate != spectral.sample_rate or model.cfg.hop_length != spectral.hop_length:
            raise ValueError(f"{config.init} was trained for another sample rate or hop than {ds.root}")
        # every tensor whose shape still fits (with new widths, the envelope and scales at least)
        own = model.state_dict()
        fits = {k: v for k, v in start.state_dict().items() if k in own and v.shape == own[k].shape}
        model.load_state_dict(fits, strict=False)
        log.info("inverter: starting from %s (%d of %d tensors)", config.init, len(fits), len(own))
        return model
    settings = {"n_mels": spectral.n_mels, "hop_length": spectral.hop_length,
                "sample_rate": spectral.sample_rate, "mel_offset": float(feats.mean()),
                "mel_scale": float(feats.std())}
    if config.kind == "harmonic":
        settings.update(f_min=spectral.f_min, f_max=spectral.f_max)
    return new_inverter(config.kind, {**settings, **config.model})


COLUMNS = ["step", "loss", "sc", "mag", "phase", "lr", "seconds"]


def _starting_inverter(config: InverterTrainConfig, ds, feats: np.ndarray, out: Path, state: dict | None) -> nn.Module:
    """A resumed run's inverter (rebuilt from ``start.yaml`` with the checkpoint's weights), or a new
    run's (described in ``start.yaml``)."""
    import yaml

    from waeserver.settings import read_mapping

    start_path = out / "start.yaml"
    if state is not None:
        meta = read_mapping(start_path, "inverter start")
        model = build_inverter(meta["kind"], meta["config"])
        model.load_state_dict(state["model"])
        return model
    model = _new_inverter(config, ds, feats)
    start_path.write_text(yaml.safe_dump(describe(model), sort_keys=False))
    return model


def train_inverter(data_dir: str | Path, out_dir: str | Path, config: InverterTrainConfig | dict | None = None,
                   device: str | torch.device = "cpu", resume: bool = False, progress: bool = True) -> dict:
    """Train an inverter on a dataset's real audio; returns the final validation metrics.

    Writes ``out_dir/``: ``checkpoint.pt`` (model, optimiser, step; tensors only), ``metrics.csv``,
    ``inverter.safetensors`` + ``inverter.yaml`` (the result), ``start.yaml`` (the inverter the run
    started with, which a resumed run rebuilds) and ``metrics.yaml`` (final validation).
    With ``resume``, training continues from the checkpoint (of the same settings but
    ``training_run.RESUMABLE``; another config's is refused); a finished run is left as it is.
    """
    import yaml

    from waeserver.data.dataset import NoteDataset
    from waeserver.dsp.stft_loss import LogMelLoss, MultiResolutionSTFTLoss

    if isinstance(config, dict):
        config = InverterTrainConfig.from_dict(config)
    config = config or InverterTrainConfig()
    out = Path(out_dir)
    run = RunFolder(out, step_settings(config))
    state = run.load() if resume and (out / "start.yaml").is_file() else None
    out.mkdir(parents=True, exist_ok=True)
    ds = NoteDataset(data_dir)
    feats, audio, pitch = load_split(ds, "train")
    torch.manual_seed(config.seed)
    model = _starting_inverter(config, ds, feats, out, state).to(device)
    loss_fn = MultiResolutionSTFTLoss(phase_weight=config.phase_weight).to(device)
    mel_loss = LogMelLoss(ds.spectral).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    first = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        first = int(state["step"])
        log.info("inverter: resuming at step %d", first)
    rng = np.random.default_rng(config.seed + first)

    def train_step(step: int) -> dict:
        mel, wave, f0 = random_crops(feats, audio, pitch, config.batch_size, config.crop_frames,
                                     ds.spectral.hop_length, rng)
        lr = cosine_lr(step / max(config.steps, 1), config.lr, config.lr_final)
        set_lr(opt, lr)
        pred, wave = model(mel.to(device), f0.to(device)), wave.to(device)
        loss, parts = loss_fn(pred, wave)
        if config.mel_weight:
            parts["mel"] = mel_loss(pred, wave)
            loss = loss + config.mel_weight * parts["mel"]
        clipped_step(opt, loss, model.parameters())
        return {"loss": loss, **parts, "lr": lr}

    def checkpoint(step: int) -> None:
        run.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": torch.tensor(step)})

    model.train()
    columns = COLUMNS + ["mel"] * bool(config.mel_weight)
    with run.metrics(columns, first if state is not None else None) as metrics:
        step = run_steps(first, config.steps, train_step, checkpoint, metrics, log_every=config.log_every,
                         checkpoint_every=config.checkpoint_every, max_minutes=config.max_minutes,
                         desc=f"inverter ({config.kind})", progress=progress)
    model.eval()
    save_inverter(model, out)
    result = evaluate_inverter(model, *load_split(ds, "valid"), ds.spectral)
    result["step"] = step
    (out / "metrics.yaml").write_text(yaml.safe_dump(result, sort_keys=False))
    log.info("inverter: step %d, validation SC %.3f, LSD %.2f dB", step, result["sc"], result["lsd_db"])
    return result
