"""Inversion speed and quality of a bundle on this machine, plus Griffin-Lim's convergence.

    python benchmarks/inversion.py --model gm-orchestra [--data data/orchestra12] [--threads 2]
                                   [--json benchmarks/inversion-HOST.json]

Prints and writes everything ``waeserver bench`` reports, and the spectral convergence of
Griffin-Lim after 0, 10, 30, 100 and 300 iterations on the same test notes (the offline reference
the MCNN is measured against). Timings are medians of warm runs; the machine's load average at
the start and the end is recorded next to them, because the figures mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from waeserver.bench import bench, format_report
from waeserver.bundle import MODELS_DIR, load_bundle
from waeserver.dataset import NoteDataset
from waeserver.spectral import (griffin_lim, log_spectral_distance, mel_to_linear, spectral_convergence,
                                stft_magnitude)


def gla_convergence(model: str, data: str | None, notes: int = 16,
                    iterations=(0, 10, 30, 100, 300)) -> dict:
    bundle = load_bundle(model, "cpu")
    data = data or bundle.card["training_data"]["path"]
    if not Path(data).is_absolute() and not Path(data).is_dir():
        data = MODELS_DIR.parent / data   # cards give the repository-relative path
    ds = NoteDataset(data)
    test = ds.indices("test")
    picks = test[np.linspace(0, len(test) - 1, min(notes, len(test))).round().astype(int)]
    mel = torch.from_numpy(np.ascontiguousarray(ds.features()[picks]))
    real = torch.from_numpy(np.stack([ds.audio(int(i)) for i in picks]))
    true_mag = stft_magnitude(real, ds.spectral)
    linear = mel_to_linear(mel, ds.spectral)
    out = {}
    for n in iterations:
        start = time.perf_counter()
        wave = griffin_lim(linear, ds.spectral, n_iter=n)
        seconds = time.perf_counter() - start
        mag = stft_magnitude(wave, ds.spectral)
        out[n] = {"sc": round(float(spectral_convergence(mag, true_mag).mean()), 4),
                  "lsd_db": round(float(log_spectral_distance(mag, true_mag).mean()), 3),
                  "ms_per_note": round(1000 * seconds / len(picks), 1)}
    return {"notes": int(len(picks)), "iterations": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gm-orchestra")
    parser.add_argument("--data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    report = bench(args.model, data=args.data, repeats=args.repeats)
    report["gla_convergence"] = gla_convergence(args.model, args.data)
    report["load_average"] = {"start": [round(v, 2) for v in load_before],
                              "end": [round(v, 2) for v in os.getloadavg()]}
    print(format_report(report))
    for n, r in report["gla_convergence"]["iterations"].items():
        print(f"Griffin-Lim {n:>3} iterations: SC {r['sc']}, LSD {r['lsd_db']} dB, {r['ms_per_note']} ms a note")
    print(f"load average {report['load_average']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
