"""How well ``waeserver transform`` moves a recorded note to another style, on a shipped bundle's test split.

    python benchmarks/transform_accuracy.py [--models gm-orchestra gm-techniques] [--notes N]
                                            [--json benchmarks/results/transform-accuracy-epyc.json]

Every test note of the bundle's dataset (``--notes`` to take fewer) is written as a take would be,
found on its onset, encoded, and decoded at its own pitch and velocity once in each of the bundle's
styles, through its real-time inverter, as ``transform`` does. The study's judges (style, pitch class
and octave classifiers, trained once per dataset on its recordings and cached in ``runs/judges-DATASET``)
then name the style and pitch of each result. Reported per bundle: how often the judges name the asked
style (over all notes and targets, per target style, and for the notes moved to a style other than
their own), how often they name the note's own pitch class and octave, and the spectral convergence
to the recording of the note decoded in its own style, beside the same figure for the note decoded from
a random latent point in its own style (what the encoder's point adds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from waeserver.data.dataset import NoteDataset
from waeserver.dsp.spectral import MelSpectrogram, spectral_convergence, stft_magnitude
from waeserver.model.evaluation import classify, load_or_train_classifiers
from waeserver.sound.bundle import load_bundle
from waeserver.sound.generate import generate_note
from waeserver.sound.transform import encode, prepare_note

REPO = Path(__file__).resolve().parents[1]


def measure(model: str, max_notes: int | None) -> dict:
    bundle = load_bundle(model, "cpu")
    data = REPO / bundle.card["training_data"]["path"]
    ds = NoteDataset(data)
    judges_dir = REPO / "runs" / f"judges-{data.name}"
    judges_dir.mkdir(parents=True, exist_ok=True)
    judges, _ = load_or_train_classifiers(ds, judges_dir, torch.device("cpu"), progress=False)
    to_mel = MelSpectrogram(ds.spectral)
    notes = [int(i) for i in ds.indices("test")][:max_notes]
    rng = torch.Generator().manual_seed(0)
    heard = {s: [] for s in bundle.styles}
    ranges = bundle.card.get("style_ranges") or {}
    moved, in_range, out_of_range, pitch_ok, octave_ok, sc_kept, sc_random = [], [], [], [], [], [], []
    t0 = time.perf_counter()
    for i in tqdm(notes, desc=bundle.name):
        row = ds.rows[i]
        note = prepare_note(ds.audio(i), bundle.n_samples, bundle.sample_rate)
        z = encode(bundle, note).cpu()
        waves = [generate_note(bundle, row["pitch"], row["velocity"], bundle.style_weights({s: 1.0}), z)
                 for s in bundle.styles]
        labels = classify(judges, to_mel(torch.from_numpy(np.stack(waves))))
        for k, style in enumerate(bundle.styles):
            right = ds.styles[int(labels["style"][k])] == style
            heard[style].append(right)
            if style != row["style"]:
                moved.append(right)
                low, high = ranges.get(style, (0, 127))
                (in_range if low <= row["pitch"] <= high else out_of_range).append(right)
        pitch_ok += list(labels["pitch_class"] == row["pitch_class"])
        octave_ok += list(labels["octave"] == row["octave"])
        original = stft_magnitude(torch.from_numpy(ds.audio(i))[None], ds.spectral)
        own = bundle.styles.index(row["style"])
        random = generate_note(bundle, row["pitch"], row["velocity"], bundle.style_weights({row["style"]: 1.0}),
                               torch.randn(bundle.latent_size, generator=rng))
        for wave, into in ((waves[own], sc_kept), (random, sc_random)):
            into.append(float(spectral_convergence(stft_magnitude(torch.from_numpy(wave)[None], ds.spectral),
                                                   original)))
    everything = [r for v in heard.values() for r in v]
    return {"model": bundle.name, "dataset": data.name, "notes": len(notes), "targets": len(bundle.styles),
            "style_named": round(float(np.mean(everything)), 4),
            "style_named_moved": round(float(np.mean(moved)), 4),
            "style_named_moved_in_range": round(float(np.mean(in_range)), 4) if in_range else None,
            "moved_in_range": len(in_range),
            "style_named_moved_out_of_range": round(float(np.mean(out_of_range)), 4) if out_of_range else None,
            "moved_out_of_range": len(out_of_range),
            "style_named_per_target": {s: round(float(np.mean(v)), 4) for s, v in heard.items()},
            "pitch_class_kept": round(float(np.mean(pitch_ok)), 4), "octave_kept": round(float(np.mean(octave_ok)), 4),
            "sc_own_style_median": round(float(np.median(sc_kept)), 4),
            "sc_random_point_median": round(float(np.median(sc_random)), 4),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gm-orchestra", "gm-techniques"])
    parser.add_argument("--notes", type=int, default=None, help="test notes per bundle (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reports = [measure(m, args.notes) for m in args.models]
    for r in reports:
        per = ", ".join(f"{s} {100 * v:.0f}" for s, v in r["style_named_per_target"].items())
        print(f"{r['model']} ({r['notes']} test notes x {r['targets']} styles): asked style named "
              f"{100 * r['style_named']:.1f}% ({100 * r['style_named_moved']:.1f}% of those moved to another "
              f"style: {100 * (r['style_named_moved_in_range'] or 0):.1f}% of the {r['moved_in_range']} within "
              f"the style's range, {100 * (r['style_named_moved_out_of_range'] or 0):.1f}% of the "
              f"{r['moved_out_of_range']} outside); pitch class kept {100 * r['pitch_class_kept']:.1f}%, "
              f"octave {100 * r['octave_kept']:.1f}%; "
              f"SC to the recording in its own style {r['sc_own_style_median']} (random point "
              f"{r['sc_random_point_median']}); per target: {per}")
    if args.json:
        args.json.write_text(json.dumps({"machine": "2-vCPU AMD EPYC VM, 1 thread", "reports": reports}, indent=2))


if __name__ == "__main__":
    main()
