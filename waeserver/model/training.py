"""``waeserver train``: one auto-encoder variant on one dataset, on CPU, one GPU or several (DDP).

A run folder holds::

    config.yaml         the training config actually used (defaults, then --config, then flags)
    metrics.csv         one row per epoch: losses, alpha, validation loss, seconds (a resumed run
                        drops the rows after its checkpoint)
    checkpoint.pt       everything --resume needs (tensors and plain data: loads with weights_only=True)
                        and the variant and model config it belongs to (another's is refused)
    best.safetensors    the best weights so far (by validation loss)
    latent_history.npz  a fixed set of notes' latent points after every epoch (model/latent_history)
    model.safetensors   the final weights (the best ones), no pickle
    model.yaml          ModelConfig, styles, spectral settings, data path, variant, how training went

Under ``torchrun --nproc_per_node N -m waeserver train ...`` each process trains on its own
share of every epoch through PyTorch's DistributedDataParallel (gloo on CPU, NCCL on CUDA);
``batch_size`` is per process, and only rank 0 writes files.
The run folder's files, the learning-rate decay and the progress bar are those of
:mod:`waeserver.model.training_run`, which the inverter and fine-tuning loops share.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from waeserver.data.dataset import NoteDataset
from waeserver.model.devices import pick_device
from waeserver.model.latent_history import LatentRecorder
from waeserver.model.losses import alpha_schedule, discriminator_loss, fader_loss, rbf_mmd, reconstruction_loss
from waeserver.model.training_run import CHECKPOINT, Metrics, RunFolder, cosine_lr, progress_bar, save_weights, set_lr
from waeserver.model.wae import VARIANTS, WAE, ModelConfig, style_onehot
from waeserver.settings import read_mapping

log = logging.getLogger(__name__)

DEFAULTS: dict = {
    "epochs": 80,
    "batch_size": 32,            # per process
    "latent": 3,
    "seed": 0,
    "lr": 1e-3,
    "lr_final": 1e-4,            # cosine decay of the auto-encoder's learning rate to this
    "disc_lr": 2e-3,
    "disc_steps": 5,             # discriminator updates per batch, so it keeps up with the encoder
    "mmd_weight": 10.0,
    "max_alpha": 4.0,
    "pre_classification": 0.1,   # share of training where alpha = 0 and only the discriminator learns z
    "ramp_end": 0.5,             # alpha reaches max_alpha here, then stays
    "patience": 15,              # epochs without a better validation reconstruction before stopping
    "threads": 1,                # torch CPU threads per process (2 spin-wait badly on a shared 2-core CPU)
    "model": {},                 # ModelConfig overrides (dec_channels, embed_dim, use_velocity, ...)
}

METRIC_COLUMNS = ["epoch", "recon", "mmd", "disc", "disc_acc", "fader", "alpha", "lr",
                  "valid_recon", "valid_mmd", "valid_loss", "best", "seconds"]


class TrainError(ValueError):
    """A training request that cannot be run, with the reason."""


def merge_config(overrides: dict | None) -> dict:
    """DEFAULTS updated with ``overrides``; unknown keys are refused."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise TrainError(f"unknown training settings: {', '.join(sorted(unknown))}")
    config = dict(DEFAULTS)
    config.update({k: v for k, v in overrides.items() if v is not None})
    if int(config["epochs"]) < 1 or int(config["batch_size"]) < 2:
        raise TrainError("epochs must be at least 1 and batch_size at least 2")
    return config


@dataclass
class Dist:
    """Where this process stands in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def load_wae(path: str | Path, device: str | torch.device = "cpu") -> tuple[WAE, dict]:
    """A trained run folder (``model.yaml`` + ``model.safetensors``) -> (WAE in eval mode, meta dict)."""
    path = Path(path)
    card, weights = path / "model.yaml", path / "model.safetensors"
    if not card.is_file() or not weights.is_file():
        raise TrainError(f"{path} holds no trained model (model.yaml and model.safetensors)")
    meta = read_mapping(card, "model card", TrainError)
    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError) as exc:
        raise TrainError(f"{card}: unreadable model card ({exc})") from exc
    model = WAE(cfg)
    state = load_file(str(weights))
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise TrainError(f"{weights} does not match {card}: {len(missing)} weights missing "
                         f"({', '.join(missing[:2])}), {len(unexpected)} unexpected ({', '.join(unexpected[:2])}), "
                         f"{len(wrong)} of another shape ({', '.join(wrong[:2])})")
    model.load_state_dict(state)
    return model.to(device).eval(), meta


class _AutoEncoder(nn.Module):
    """Encoder and decoder in one forward, so DDP sees every auto-encoder parameter used."""

    def __init__(self, wae: WAE):
        super().__init__()
        self.encoder, self.decoder = wae.encoder, wae.decoder

    def forward(self, mel, pitch, style, velocity):
        z = self.encoder(mel)
        return self.decoder(z, pitch, style, velocity), z


def train(data_dir: str | Path, variant: str, out_dir: str | Path, config: dict | None = None,
          device: str = "auto", resume: bool = False, progress: bool = True) -> dict:
    """Train one variant; returns the summary written into ``model.yaml`` (``meta["training"]``).

    ``config`` overrides :data:`DEFAULTS`. Under torchrun (``WORLD_SIZE`` > 1) this joins the
    process group itself and leaves it at the end.
    """
    if variant not in VARIANTS:
        raise TrainError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    config = merge_config(config)
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    if resume and not ckpt_path.is_file():
        raise TrainError(f"--resume: {ckpt_path} does not exist")
    if not resume and (ckpt_path.exists() or (out / "model.safetensors").exists()):
        raise TrainError(f"{out} already holds a training run; use --resume or another --out")
    ds = NoteDataset(data_dir)
    train_idx, valid_idx = ds.indices("train"), ds.indices("valid")
    if len(train_idx) < 2 or len(valid_idx) < 1:
        raise TrainError(f"{ds.root}: needs at least 2 training and 1 validation note")

    rank = Dist.from_env()
    if rank.active and not dist.is_initialized():
        backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    torch.set_num_threads(int(config["threads"]))
    dev = pick_device(device, rank.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        return _train(ds, variant, out, config, dev, rank, resume, progress, train_idx, valid_idx)
    finally:
        if rank.active and dist.is_initialized():
            dist.destroy_process_group()


def _model_config(ds: NoteDataset, train_feats: np.ndarray, variant: str, config: dict) -> ModelConfig:
    return ModelConfig(**{"n_mels": ds.spectral.n_mels, "n_frames": ds.spectral.n_frames,
                          "latent": int(config["latent"]), "n_styles": len(ds.styles), "variant": variant,
                          # a fixed affine from the training set, so the model sees values near N(0, 1)
                          "mel_offset": round(float(train_feats.mean()), 4),
                          "mel_scale": round(float(train_feats.std()), 4), **dict(config["model"])})


def _tensors(ds: NoteDataset, feats: np.ndarray, idx: np.ndarray, dev: torch.device) -> tuple:
    """Notes ``idx`` as (mel ``[N, M, F]``, pitch ``[N]``, style index ``[N]``, velocity 0..1 ``[N]``)."""
    lab = ds.labels(idx)
    return (torch.from_numpy(np.ascontiguousarray(feats[idx])).to(dev),
            torch.from_numpy(lab["pitch"]).to(dev), torch.from_numpy(lab["style"]).to(dev),
            torch.from_numpy(lab["velocity"]).float().div(127).to(dev))


class _Fit:
    """One auto-encoder run's networks (DDP-wrapped under torchrun) and optimisers, and an epoch of
    training them on this process's share of the training notes (tensors as :func:`_tensors` gives)."""

    def __init__(self, wae: WAE, config: dict, rank: Dist, dev: torch.device, train_t: tuple, valid_t: tuple):
        self.wae, self.config, self.rank, self.dev = wae, config, rank, dev
        self.train_t, self.valid_t = train_t, valid_t
        self.ae: nn.Module = _AutoEncoder(wae)
        self.disc = wae.discriminator
        if rank.active:
            ids = [dev.index] if dev.type == "cuda" else None
            self.ae = DistributedDataParallel(self.ae, device_ids=ids)
            if self.disc is not None:
                self.disc = DistributedDataParallel(self.disc, device_ids=ids)
        self.ae_opt = torch.optim.Adam(list(wae.encoder.parameters()) + list(wae.decoder.parameters()),
                                       lr=config["lr"], betas=(0.5, 0.999))
        self.disc_opt = (torch.optim.Adam(wae.discriminator.parameters(), lr=config["disc_lr"], betas=(0.5, 0.999))
                         if wae.discriminator is not None else None)
        self.bs = int(config["batch_size"])
        self.n_per_rank = len(train_t[0]) // rank.world
        self.batches = max(1, self.n_per_rank // self.bs)  # drop the last short batch: batch-norm and MMD want pairs
        gen = torch.Generator().manual_seed(int(config["seed"]) + 1)
        self.valid_prior = torch.randn(len(valid_t[0]), wae.cfg.latent, generator=gen).to(dev)

    def state(self) -> dict:
        """What a checkpoint holds of the networks, optimisers and torch's random state."""
        return {"weights": self.wae.state_dict(), "ae_opt": self.ae_opt.state_dict(),
                "disc_opt": self.disc_opt.state_dict() if self.disc_opt is not None else {},
                "rng": torch.get_rng_state()}

    def load(self, ckpt: dict) -> None:
        self.wae.load_state_dict(ckpt["weights"])
        self.ae_opt.load_state_dict(ckpt["ae_opt"])
        if self.disc_opt is not None:
            self.disc_opt.load_state_dict(ckpt["disc_opt"])
        torch.set_rng_state(ckpt["rng"].cpu())   # loaded onto the training device with the rest

    def epoch(self, epoch: int) -> dict:
        """Epoch ``epoch`` (from 0): the mean losses of its batches, the alpha and lr of its last step."""
        config, rank = self.config, self.rank
        total_steps = int(config["epochs"]) * self.batches
        order = np.random.default_rng(int(config["seed"]) * 1000 + epoch).permutation(len(self.train_t[0]))
        mine = order[rank.rank * self.n_per_rank:(rank.rank + 1) * self.n_per_rank]
        sums = {k: 0.0 for k in ("recon", "mmd", "disc", "disc_acc", "fader")}
        self.wae.train()
        for b in range(self.batches):
            prog = (epoch * self.batches + b) / total_steps
            alpha = alpha_schedule(prog, config["pre_classification"], config["max_alpha"],
                                   config["ramp_end"]) if self.disc is not None else 0.0
            lr = cosine_lr(prog, config["lr"], config["lr_final"])
            set_lr(self.ae_opt, lr)
            sel = torch.from_numpy(mine[b * self.bs:(b + 1) * self.bs]).to(self.dev)
            for k, v in self._batch(*(t[sel] for t in self.train_t), alpha).items():
                sums[k] += v
        return {**{k: v / self.batches for k, v in sums.items()}, "alpha": alpha, "lr": lr}

    def _batch(self, mel, pitch, style, vel, alpha: float) -> dict:
        """One batch: ``disc_steps`` discriminator updates on the detached z, then one auto-encoder update."""
        cfg, config, losses = self.wae.cfg, self.config, {}
        recon, z = self.ae(mel, pitch, style_onehot(style, cfg.n_styles), vel)
        if self.disc is not None:
            for _ in range(int(config["disc_steps"])):
                logits = self.disc(z.detach())
                d_loss = discriminator_loss(logits, style)
                self.disc_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                self.disc_opt.step()
            losses.update(disc=d_loss.item(), disc_acc=(logits.argmax(1) == style).float().mean().item())
        r_loss = reconstruction_loss(recon, mel, cfg.mel_scale)
        m_loss = rbf_mmd(z, torch.randn_like(z))
        loss = r_loss + config["mmd_weight"] * m_loss
        if self.disc is not None:
            f_loss = fader_loss(self.disc(z))
            loss = loss + alpha * f_loss
            losses["fader"] = f_loss.item()
        self.ae_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.ae_opt.step()
        return {**losses, "recon": r_loss.item(), "mmd": m_loss.item()}

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation losses, computed by rank 0 and shared, so every process takes the same stop decision."""
        wae, result = self.wae, torch.zeros(2, device=self.dev)
        if self.rank.main:
            wae.eval()
            mel, pitch, style, vel = self.valid_t
            recon, z = wae(mel, pitch, style_onehot(style, wae.cfg.n_styles), vel)
            result[0] = reconstruction_loss(recon, mel, wae.cfg.mel_scale)
            result[1] = rbf_mmd(z, self.valid_prior)
            wae.train()
        if self.rank.active:
            dist.broadcast(result, 0)
        recon_l, mmd_l = result.tolist()
        return {"valid_recon": recon_l, "valid_mmd": mmd_l, "valid_loss": recon_l + self.config["mmd_weight"] * mmd_l}


def _train(ds: NoteDataset, variant: str, out: Path, config: dict, dev: torch.device, rank: Dist,
           resume: bool, progress: bool, train_idx: np.ndarray, valid_idx: np.ndarray) -> dict:
    feats = np.asarray(ds.features())
    cfg = _model_config(ds, feats[train_idx], variant, config)
    torch.manual_seed(int(config["seed"]))
    wae = WAE(cfg).to(dev)
    fit = _Fit(wae, config, rank, dev, _tensors(ds, feats, train_idx, dev), _tensors(ds, feats, valid_idx, dev))
    run = RunFolder(out, {"variant": variant, "model": cfg.to_dict()}, TrainError, writes=rank.main)
    state = {"epoch": 0, "best": float("inf"), "best_epoch": 0, "bad_epochs": 0, "seconds": 0.0}
    if resume:
        ckpt = run.load(dev)
        fit.load(ckpt)
        state.update(ckpt["state"])
        # the schedule is the run's own: a resumed run keeps its length and its alpha ramp
        config = fit.config = {**config, **{k: ckpt["config"][k] for k in ("epochs", "pre_classification", "ramp_end")}}
        log.info("resuming %s at epoch %d of %d", out, state["epoch"], config["epochs"])
    if rank.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(
            {"data": str(ds.root.resolve()), "variant": variant, **config}, sort_keys=False))
    recorder = LatentRecorder(ds, feats, out, wae.encoder, dev, state["epoch"]) if rank.main else None
    with run.metrics(METRIC_COLUMNS, state["epoch"] if resume else None) as metrics:
        _epochs(fit, run, metrics, state, f"train {variant}", progress, recorder)
    summary = {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
               "best_valid_recon": round(state["best"], 5), "train_seconds": round(state["seconds"], 1),
               "processes": rank.world, "device": str(dev)}
    if rank.main:
        _finish(out, ds, wae, cfg, variant, config, summary)
    if rank.active:
        dist.barrier()
    return summary


def _epochs(fit: _Fit, run: RunFolder, metrics: Metrics, state: dict, desc: str, progress: bool,
            recorder: LatentRecorder | None = None) -> None:
    """Epochs from ``state["epoch"]`` to the last or to an early stop, ``state`` checkpointed after each.

    Early stopping and the choice of the final weights go by the validation reconstruction: the
    MMD of a few hundred validation points is too noisy to steer by (it is logged). For wae-fader
    they wait until alpha has reached its fixed value: before that the objective moves.
    """
    config, main = fit.config, fit.rank.main
    epochs = int(config["epochs"])
    watch_from = config["ramp_end"] if fit.wae.cfg.uses_discriminator else 0.0
    bar = progress_bar(epochs, state["epoch"], desc, "epoch", progress and main)
    while state["epoch"] < epochs:
        start = time.perf_counter()
        row = fit.epoch(state["epoch"])
        valid = fit.validate()
        state["epoch"] += 1
        state["seconds"] += time.perf_counter() - start
        improved = False
        if state["epoch"] / epochs >= watch_from or state["epoch"] == epochs:
            if valid["valid_recon"] < state["best"]:
                state.update(best=valid["valid_recon"], best_epoch=state["epoch"], bad_epochs=0)
                improved = True
            else:
                state["bad_epochs"] += 1
        if main:
            if improved:
                save_weights(fit.wae, run.out / "best.safetensors")
            metrics.write({**row, **valid, "epoch": state["epoch"], "best": int(improved),
                           "seconds": round(time.perf_counter() - start, 3)})
            run.save({**fit.state(), "state": dict(state), "config": config})
            if recorder is not None:
                recorder.record(fit.wae.encoder, state["epoch"], row["alpha"])
            bar.set_postfix(recon=f"{row['recon']:.3f}", mmd=f"{row['mmd']:.4f}",
                            valid=f"{valid['valid_recon']:.3f}", alpha=f"{row['alpha']:.2f}")
        bar.update(1)
        if state["bad_epochs"] >= int(config["patience"]):
            log.info("early stop at epoch %d: no better validation reconstruction for %d epochs",
                     state["epoch"], config["patience"])
            break
    bar.close()


def _finish(out: Path, ds: NoteDataset, wae: WAE, cfg: ModelConfig, variant: str, config: dict,
            summary: dict) -> None:
    """The best weights become model.safetensors, described by model.yaml."""
    best = out / "best.safetensors"
    if best.is_file():
        wae.load_state_dict(load_file(str(best)))
    save_weights(wae, out / "model.safetensors")
    pitches = [r["pitch"] for r in ds.rows]
    meta = {"variant": variant, "model": cfg.to_dict(), "styles": list(ds.styles),
            "spectral": ds.spectral.to_dict(), "data": str(ds.root.resolve()),
            "pitch_range": [min(pitches), max(pitches)], "velocity_input": "MIDI velocity / 127",
            "training": {**summary, "seed": config["seed"]}, "torch": str(torch.__version__)}
    (out / "model.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    log.info("%s: %d epochs in %.0f s, best validation reconstruction %.4f at epoch %d -> %s", variant,
             summary["epochs_run"], summary["train_seconds"], summary["best_valid_recon"],
             summary["best_epoch"], out)


__all__ = ["DEFAULTS", "TrainError", "load_wae", "merge_config", "train"]
