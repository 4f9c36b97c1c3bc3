"""``waeserver train``: one auto-encoder variant on one dataset, on CPU, one GPU or several (DDP).

A run folder holds::

    config.yaml         the training config actually used (defaults, then --config, then flags)
    metrics.csv         one row per epoch: losses, alpha, validation loss, seconds
    checkpoint.pt       everything --resume needs (tensors and plain data: loads with weights_only=True)
    best.safetensors    the best weights so far (by validation loss)
    model.safetensors   the final weights (the best ones), no pickle
    model.yaml          ModelConfig, styles, spectral settings, data path, variant, how training went

Under ``torchrun --nproc_per_node N -m waeserver train ...`` each process trains on its own
share of every epoch through PyTorch's DistributedDataParallel (gloo on CPU, NCCL on CUDA);
``batch_size`` is per process, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from waeserver.data.dataset import NoteDataset
from waeserver.model.losses import alpha_schedule, discriminator_loss, fader_loss, rbf_mmd, reconstruction_loss
from waeserver.model.wae import VARIANTS, WAE, ModelConfig

log = logging.getLogger(__name__)

DEFAULTS: dict = {
    "epochs": 80,
    "batch_size": 32,            # per process
    "latent": 3,
    "seed": 0,
    "lr": 1e-3,
    "lr_final": 1e-4,            # cosine decay of both learning rates to this
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


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` takes CUDA when present (under torchrun the process's own GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainError(f"device {name} asked for, but CUDA is not available")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    elif name != "cpu":
        raise TrainError(f"unknown device {name!r}: auto, cpu, cuda or cuda:N")
    return torch.device(name)


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


def save_weights(model: WAE, path: Path) -> None:
    """All weights and buffers of ``model`` as safetensors (written to a temporary file, then renamed)."""
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)


def load_wae(path: str | Path, device: str | torch.device = "cpu") -> tuple[WAE, dict]:
    """A trained run folder (``model.yaml`` + ``model.safetensors``) -> (WAE in eval mode, meta dict)."""
    path = Path(path)
    card, weights = path / "model.yaml", path / "model.safetensors"
    if not card.is_file() or not weights.is_file():
        raise TrainError(f"{path} holds no trained model (model.yaml and model.safetensors)")
    try:
        meta = yaml.safe_load(card.read_text()) or {}
        cfg = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, yaml.YAMLError) as exc:
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


def _style_onehot(style: torch.Tensor, n_styles: int) -> torch.Tensor:
    return nn.functional.one_hot(style, n_styles).float()


class _AutoEncoder(nn.Module):
    """Encoder and decoder in one forward, so DDP sees every auto-encoder parameter used."""

    def __init__(self, wae: WAE):
        super().__init__()
        self.encoder, self.decoder = wae.encoder, wae.decoder

    def forward(self, mel, pitch, style, velocity):
        z = self.encoder(mel)
        return self.decoder(z, pitch, style, velocity), z


def _lr_at(progress: float, lr: float, lr_final: float) -> float:
    return float(lr_final + 0.5 * (lr - lr_final) * (1 + np.cos(np.pi * min(progress, 1.0))))


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
    ckpt_path = out / "checkpoint.pt"
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
    dev = resolve_device(device, rank.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        return _train(ds, variant, out, config, dev, rank, resume, progress, train_idx, valid_idx)
    finally:
        if rank.active and dist.is_initialized():
            dist.destroy_process_group()


def _train(ds: NoteDataset, variant: str, out: Path, config: dict, dev: torch.device, rank: Dist,
           resume: bool, progress: bool, train_idx: np.ndarray, valid_idx: np.ndarray) -> dict:
    feats = np.asarray(ds.features())
    train_np = feats[train_idx]
    model_over = dict(config["model"])
    cfg = ModelConfig(**{"n_mels": ds.spectral.n_mels, "n_frames": ds.spectral.n_frames,
                         "latent": int(config["latent"]), "n_styles": len(ds.styles), "variant": variant,
                         # a fixed affine from the training set, so the model sees values near N(0, 1)
                         "mel_offset": round(float(train_np.mean()), 4),
                         "mel_scale": round(float(train_np.std()), 4), **model_over})
    torch.manual_seed(int(config["seed"]))
    wae = WAE(cfg).to(dev)

    def tensors(idx):
        lab = ds.labels(idx)
        return (torch.from_numpy(np.ascontiguousarray(feats[idx])).to(dev),
                torch.from_numpy(lab["pitch"]).to(dev), torch.from_numpy(lab["style"]).to(dev),
                torch.from_numpy(lab["velocity"]).float().div(127).to(dev))

    train_t, valid_t = tensors(train_idx), tensors(valid_idx)
    ae: nn.Module = _AutoEncoder(wae)
    disc = wae.discriminator
    if rank.active:
        ids = [dev.index] if dev.type == "cuda" else None
        ae = DistributedDataParallel(ae, device_ids=ids)
        if disc is not None:
            disc = DistributedDataParallel(disc, device_ids=ids)
    ae_opt = torch.optim.Adam(list(wae.encoder.parameters()) + list(wae.decoder.parameters()),
                              lr=config["lr"], betas=(0.5, 0.999))
    disc_opt = (torch.optim.Adam(wae.discriminator.parameters(), lr=config["disc_lr"], betas=(0.5, 0.999))
                if wae.discriminator is not None else None)

    epochs, bs = int(config["epochs"]), int(config["batch_size"])
    n_per_rank = len(train_idx) // rank.world
    batches = max(1, n_per_rank // bs)  # drop the last short batch: batch-norm and MMD want pairs
    total_steps = epochs * batches
    state = {"epoch": 0, "best": float("inf"), "best_epoch": 0, "bad_epochs": 0, "seconds": 0.0}
    if resume:
        ckpt = torch.load(out / "checkpoint.pt", map_location=dev, weights_only=True)
        if ckpt["variant"] != variant or ckpt["model"] != cfg.to_dict():
            raise TrainError(f"{out}: checkpoint was made with another variant or model config")
        wae.load_state_dict(ckpt["weights"])
        ae_opt.load_state_dict(ckpt["ae_opt"])
        if disc_opt is not None:
            disc_opt.load_state_dict(ckpt["disc_opt"])
        state.update(ckpt["state"])
        torch.set_rng_state(ckpt["rng"])
        config = {**config, **{k: ckpt["config"][k] for k in ("epochs", "pre_classification", "ramp_end")}}
        log.info("resuming %s at epoch %d of %d", out, state["epoch"], epochs)

    if rank.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(
            {"data": str(ds.root.resolve()), "variant": variant, **config}, sort_keys=False))
        if not resume:
            with open(out / "metrics.csv", "w", newline="") as fh:
                csv.writer(fh).writerow(METRIC_COLUMNS)

    # Early stopping and the choice of the final weights go by the validation reconstruction: the
    # MMD of a few hundred validation points is too noisy to steer by (it is logged). For wae-fader
    # they wait until alpha has reached its fixed value: before that the objective moves.
    watch_from = config["ramp_end"] if cfg.uses_discriminator else 0.0
    gen = torch.Generator().manual_seed(int(config["seed"]) + 1)
    valid_prior = torch.randn(len(valid_idx), cfg.latent, generator=gen).to(dev)
    bar = tqdm(total=epochs, initial=state["epoch"], desc=f"train {variant}", unit="epoch",
               disable=not (progress and rank.main))
    while state["epoch"] < epochs:
        epoch = state["epoch"]
        start = time.perf_counter()
        wae.train()
        order = np.random.default_rng(int(config["seed"]) * 1000 + epoch).permutation(len(train_idx))
        mine = order[rank.rank * n_per_rank:(rank.rank + 1) * n_per_rank]
        sums = {k: 0.0 for k in ("recon", "mmd", "disc", "disc_acc", "fader")}
        for b in range(batches):
            step = epoch * batches + b
            prog = step / total_steps
            alpha = alpha_schedule(prog, config["pre_classification"], config["max_alpha"],
                                   config["ramp_end"]) if disc is not None else 0.0
            lr = _lr_at(prog, config["lr"], config["lr_final"])
            for group in ae_opt.param_groups:
                group["lr"] = lr
            sel = torch.from_numpy(mine[b * bs:(b + 1) * bs]).to(dev)
            mel, pitch, style, vel = (t[sel] for t in train_t)
            recon, z = ae(mel, pitch, _style_onehot(style, cfg.n_styles), vel)
            if disc is not None:
                for _ in range(int(config["disc_steps"])):
                    logits = disc(z.detach())
                    d_loss = discriminator_loss(logits, style)
                    disc_opt.zero_grad(set_to_none=True)
                    d_loss.backward()
                    disc_opt.step()
                sums["disc"] += d_loss.item()
                sums["disc_acc"] += (logits.argmax(1) == style).float().mean().item()
            r_loss = reconstruction_loss(recon, mel, cfg.mel_scale)
            m_loss = rbf_mmd(z, torch.randn_like(z))
            loss = r_loss + config["mmd_weight"] * m_loss
            if disc is not None:
                f_loss = fader_loss(disc(z))
                loss = loss + alpha * f_loss
                sums["fader"] += f_loss.item()
            ae_opt.zero_grad(set_to_none=True)
            loss.backward()
            ae_opt.step()
            sums["recon"] += r_loss.item()
            sums["mmd"] += m_loss.item()
        row = {k: v / batches for k, v in sums.items()}
        valid = _validate(wae, valid_t, valid_prior, config["mmd_weight"], rank, dev)
        state["epoch"] = epoch + 1
        state["seconds"] += time.perf_counter() - start
        improved = False
        if state["epoch"] / epochs >= watch_from or state["epoch"] == epochs:
            if valid["valid_recon"] < state["best"]:
                state.update(best=valid["valid_recon"], best_epoch=state["epoch"], bad_epochs=0)
                improved = True
            else:
                state["bad_epochs"] += 1
        stop = state["bad_epochs"] >= int(config["patience"])
        if rank.main:
            if improved:
                save_weights(wae, out / "best.safetensors")
            row.update(epoch=state["epoch"], alpha=alpha, lr=lr, best=int(improved),
                       seconds=round(time.perf_counter() - start, 3), **valid)
            with open(out / "metrics.csv", "a", newline="") as fh:
                csv.writer(fh).writerow([_fmt(row[c]) for c in METRIC_COLUMNS])
            _save_checkpoint(out / "checkpoint.pt", wae, ae_opt, disc_opt, state, cfg, variant, config)
            bar.set_postfix(recon=f"{row['recon']:.3f}", mmd=f"{row['mmd']:.4f}",
                            valid=f"{valid['valid_recon']:.3f}", alpha=f"{alpha:.2f}")
        bar.update(1)
        if stop:
            log.info("early stop at epoch %d: no better validation reconstruction for %d epochs",
                     state["epoch"], config["patience"])
            break
    bar.close()
    summary = {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
               "best_valid_recon": round(state["best"], 5), "train_seconds": round(state["seconds"], 1),
               "processes": rank.world, "device": str(dev)}
    if rank.main:
        _finish(out, ds, wae, cfg, variant, config, summary)
    if rank.active:
        dist.barrier()
    return summary


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@torch.no_grad()
def _validate(wae: WAE, valid_t, prior: torch.Tensor, mmd_weight: float, rank: Dist,
              dev: torch.device) -> dict:
    """Validation losses, computed by rank 0 and shared, so every process takes the same stop decision."""
    result = torch.zeros(2, device=dev)
    if rank.main:
        wae.eval()
        mel, pitch, style, vel = valid_t
        recon, z = wae(mel, pitch, _style_onehot(style, wae.cfg.n_styles), vel)
        result[0] = reconstruction_loss(recon, mel, wae.cfg.mel_scale)
        result[1] = rbf_mmd(z, prior)
        wae.train()
    if rank.active:
        dist.broadcast(result, 0)
    recon_l, mmd_l = result.tolist()
    return {"valid_recon": recon_l, "valid_mmd": mmd_l, "valid_loss": recon_l + mmd_weight * mmd_l}


def _save_checkpoint(path: Path, wae: WAE, ae_opt, disc_opt, state: dict, cfg: ModelConfig,
                     variant: str, config: dict) -> None:
    ckpt = {"weights": wae.state_dict(), "ae_opt": ae_opt.state_dict(),
            "disc_opt": disc_opt.state_dict() if disc_opt is not None else {},
            "state": dict(state), "rng": torch.get_rng_state(), "model": cfg.to_dict(),
            "variant": variant, "config": config}
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


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
