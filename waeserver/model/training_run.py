"""One resumable training run in its folder, as the auto-encoder, inverter and fine-tuning loops keep it.

    checkpoint.pt   everything resuming needs, written atomically and tagged with the run's identity
                    (the settings a resumed run must share): a checkpoint of another config is refused
    metrics.csv     one row per epoch or logged step; resuming drops the rows logged after the checkpoint

and the pieces every step uses: a cosine learning-rate decay, a clipped optimiser step, a progress bar.
The two step loops (inverters, fine-tuning) also share the loop itself, :func:`run_steps`: a wall-time
budget, a metrics row every ``log_every`` steps, a checkpoint every ``checkpoint_every`` steps and at
the end. Under DDP only rank 0 writes (``writes=False`` elsewhere).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
# the step-loop settings a run may change when it resumes: how long, how fast, how often it writes
# (docs/sound.md: the shipped inverters were resumed with other steps and learning rates)
RESUMABLE = ("steps", "max_minutes", "lr", "lr_final", "checkpoint_every", "log_every")


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary file renamed over ``path``: a crash never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def save_weights(module: torch.nn.Module, path: Path) -> None:
    """Every weight and buffer of ``module`` as safetensors, atomically like the checkpoint."""
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(tmp))
    tmp.replace(path)


def cosine_lr(progress: float, lr: float, lr_final: float) -> float:
    """The learning rate ``progress`` (0..1, clamped at 1) of the way through a cosine decay to ``lr_final``."""
    return lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clipped_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters) -> None:
    """Backward, gradient norm clipped at 1, one step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()


def progress_bar(total: int, initial: int, desc: str, unit: str, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled)


def _plain(value):
    """``value`` as JSON would give it back (tuples become lists), so identities compare by content."""
    return json.loads(json.dumps(value))


def _flat(identity: dict, prefix: str = "") -> dict:
    """Nested settings as ``{"model.dec_channels": 64, ...}``, so a refusal names the one that differs."""
    flat = {}
    for key, value in identity.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Metrics:
    """``metrics.csv`` with ``columns``: new, or resuming at step/epoch ``resumed_at`` without the rows
    logged after it (they are about to be logged again). Floats are written with 6 significant digits."""

    def __init__(self, path: Path, columns: list[str], resumed_at: int | None, writes: bool = True):
        self.columns = list(columns)
        self._fh = None
        if not writes:
            return
        if resumed_at is not None and path.is_file() and path.stat().st_size:
            rows = path.read_text().splitlines()
            kept = [rows[0]] + [r for r in rows[1:] if int(r.split(",")[0]) <= resumed_at]
            path.write_text("\n".join(kept) + "\n")
            self._fh = open(path, "a", newline="")
            self._writer = csv.writer(self._fh)
        else:
            self._fh = open(path, "w", newline="")
            self._writer = csv.writer(self._fh)
            self._writer.writerow(self.columns)

    def write(self, row: dict) -> None:
        """One row (a value for every column), flushed, so a crash loses nothing logged."""
        if self._fh is None:
            return
        self._writer.writerow([f"{v:.6g}" if isinstance(v, float) else str(v) for v in (row[c] for c in self.columns)])
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunFolder:
    """``out/checkpoint.pt`` of a run whose ``identity`` (plain data: the settings a resumed run must
    share) goes into every checkpoint; :meth:`load` refuses a checkpoint of another identity with
    ``error``. Only a folder that ``writes`` (rank 0 under DDP) writes anything."""

    def __init__(self, out: Path, identity: dict, error: type[Exception] = ValueError, writes: bool = True):
        self.out, self.identity, self.error, self.writes = Path(out), _plain(identity), error, writes
        self.checkpoint = self.out / CHECKPOINT

    def load(self, device: str | torch.device = "cpu") -> dict | None:
        """The checkpoint's state (tensors and plain data), or None when there is none."""
        if not self.checkpoint.is_file():
            return None
        state = torch.load(self.checkpoint, map_location=device, weights_only=True)
        theirs = state.pop("identity", None)
        if theirs is None:   # written before checkpoints carried their identity: nothing to compare
            log.info("%s carries no run identity; resuming it unchecked", self.checkpoint)
            return state
        there, here = _flat(theirs), _flat(self.identity)
        differ = sorted(k for k in set(there) | set(here) if there.get(k) != here.get(k))
        if differ:
            shown = "; ".join(f"{k}: {there.get(k)!r} there, {here.get(k)!r} here" for k in differ[:3])
            raise self.error(f"{self.checkpoint} belongs to a run of another config ({shown}); "
                             "resume with the same settings or start in another folder")
        return state

    def save(self, state: dict) -> None:
        if self.writes:
            save_checkpoint(self.checkpoint, {**state, "identity": self.identity})

    def metrics(self, columns: list[str], resumed_at: int | None) -> Metrics:
        return Metrics(self.out / METRICS, columns, resumed_at, self.writes)


def step_settings(config) -> dict:
    """A step loop's config dataclass as plain data, less :data:`RESUMABLE`: what its checkpoint must match."""
    return {k: v for k, v in asdict(config).items() if k not in RESUMABLE}


def run_steps(first: int, steps: int, train_step: Callable[[int], dict], checkpoint: Callable[[int], None],
              metrics: Metrics, *, log_every: int, checkpoint_every: int, max_minutes: float, desc: str,
              progress: bool) -> int:
    """Steps ``first .. steps - 1`` of ``train_step(step) -> {column: value}`` (tensors are read only
    on the steps that log); a metrics row (with ``step`` counting from 1 and ``seconds``) every
    ``log_every`` steps, ``checkpoint(steps_done)`` every ``checkpoint_every`` steps and once at the
    end; stops early once ``max_minutes`` (0: no limit) of wall time are spent. Returns the steps done."""
    started = time.monotonic()
    done = first
    bar = progress_bar(steps, first, desc, "step", progress)
    while done < steps:
        if max_minutes and time.monotonic() - started > 60 * max_minutes:
            log.info("%s: time budget of %.1f min spent at step %d", desc, max_minutes, done)
            break
        values = train_step(done)
        done += 1
        bar.update(1)
        if done % log_every == 0:
            row = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in values.items()}
            metrics.write({**row, "step": done, "seconds": round(time.monotonic() - started, 1)})
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "sc")})
        if done % checkpoint_every == 0:
            checkpoint(done)
    bar.close()
    checkpoint(done)
    return done
