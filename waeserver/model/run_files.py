"""What the resumable training loops (inverters, fine-tuning) share: an atomic checkpoint, a
``metrics.csv`` that resumes where its checkpoint did, and one clipped optimiser step."""

from __future__ import annotations

import csv
from pathlib import Path

import torch


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary file renamed over ``path``: a crash never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def open_metrics(path: Path, header: list[str], resumed_at: int | None):
    """``(file, csv writer)`` for ``path``: new with ``header``, or, resuming at step ``resumed_at``,
    without the rows logged after that step (they are about to be logged again)."""
    if resumed_at is None or not path.is_file():
        fh = open(path, "w", newline="")
        writer = csv.writer(fh)
        writer.writerow(header)
        return fh, writer
    rows = path.read_text().splitlines()
    kept = [rows[0]] + [r for r in rows[1:] if int(r.split(",")[0]) <= resumed_at]
    path.write_text("\n".join(kept) + "\n")
    fh = open(path, "a", newline="")
    return fh, csv.writer(fh)


def clipped_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters) -> None:
    """Backward, gradient norm clipped at 1, one step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
