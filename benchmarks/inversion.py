"""Every real-time inverter of the shipped bundles against Griffin-Lim and the recordings, in one run.

    python benchmarks/inversion.py [--models gm-orchestra gm-techniques] [--notes N] [--repeats 50]
                                   [--json benchmarks/results/inversion.json]
                                   [--figure docs/figures/inversion-spectrograms.png]

For each bundle, on the whole test split of its dataset (``--notes`` to take fewer): spectral
convergence, log-spectral distance and the multi-resolution STFT distance of Griffin-Lim (100
iterations), of each inverter the bundle carries (the harmonic inverter and the MCNN it replaced)
and of the harmonic inverter with its frequency deviations switched off (``harmonic-fixed-f0``:
the same weights at a fixed f0) on the real log-mels, and of the whole model (encoder, decoder,
default inverter); the study's judges (pitch class, octave and style classifiers, trained once per dataset and cached in
``runs/judges-DATASET``) on log-mels recomputed from each path's audio and from the recordings;
milliseconds a note with 1 and 2 threads; the pitch of generated notes. Prints a Markdown table,
writes the JSON and a figure of spectrograms (a recording, Griffin-Lim, the MCNN, the harmonic
inverter). The machine's load average at the start and the end goes with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from waeserver.sound.bench import bench, format_report
from waeserver.sound.bundle import load_bundle

REPO = Path(__file__).resolve().parent.parent


def dataset_of(model: str) -> Path:
    path = Path(load_bundle(model, "cpu").card["training_data"]["path"])
    return path if path.is_absolute() else REPO / path


def fixed_f0(inverter):
    """The same harmonic inverter with no frequency deviation (an ablation at inference)."""
    from waeserver.sound.inverters import build_inverter, describe

    meta = describe(inverter)
    copy = build_inverter("harmonic", {**meta["config"], "max_deviation": 0.0})
    copy.load_state_dict(inverter.state_dict())
    return copy.eval()


def table(reports: dict[str, dict]) -> str:
    """The side-by-side table of the docs: one row per path and bundle."""
    rows = ["| bundle | path | SC | LSD (dB) | MR-STFT | judges: pitch class / octave / style (%) |",
            "|---|---|---|---|---|---|"]
    for model, report in reports.items():
        q = report["quality"]
        judges = q.get("judges", {})
        for path in ["recording", "gla", *[k for k in q if isinstance(q[k], dict) and "sc" in q[k] and k != "gla"]]:
            scores = q.get(path, {"sc": 0.0, "lsd_db": 0.0, "mrstft": 0.0})
            heard = judges.get(path)
            ears = " / ".join(f"{100 * heard[k]:.1f}" for k in ("pitch_class", "octave", "style")) if heard else ""
            rows.append(f"| {model} | {path} | {scores['sc']:.3f} | {scores['lsd_db']:.2f} | "
                        f"{scores['mrstft']:.3f} | {ears} |")
    return "\n".join(rows)


@torch.no_grad()
def figure(model: str, path: Path, note: int = 0) -> None:
    """Spectrograms of one test note: the recording, Griffin-Lim and each inverter of the bundle."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from waeserver.data.dataset import NoteDataset
    from waeserver.dsp.pitch import midi_to_f0
    from waeserver.dsp.spectral import griffin_lim, mel_to_linear, stft_magnitude

    b = load_bundle(model, "cpu")
    ds = NoteDataset(dataset_of(model))
    test = ds.indices("test")
    i = int(test[note % len(test)])
    mel = torch.from_numpy(np.array(ds.features()[i]))[None]
    pitch = torch.tensor([ds.rows[i]["pitch"]])
    waves = {"recording": torch.from_numpy(ds.audio(i))[None],
             "Griffin-Lim (100 iterations)": griffin_lim(mel_to_linear(mel, ds.spectral), ds.spectral)}
    waves.update({f"{name} inverter": inv(mel, midi_to_f0(pitch)) for name, inv in b.inverters.items()})
    fig, axes = plt.subplots(1, len(waves), figsize=(4 * len(waves), 3.6), sharey=True)
    for ax, (name, wave) in zip(axes, waves.items()):
        mag = 20 * torch.log10(stft_magnitude(wave, ds.spectral)[0].clamp(min=1e-5))
        ax.imshow(mag[:256].numpy(), origin="lower", aspect="auto", vmin=-80, vmax=float(mag.max()),
                  extent=(0, wave.shape[-1] / ds.sample_rate, 0, 256 * ds.sample_rate / ds.spectral.n_fft))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("s")
    axes[0].set_ylabel("Hz")
    row = ds.rows[i]
    fig.suptitle(f"{model}: {row['style']}, MIDI {row['pitch']}, velocity {row['velocity']} (test note)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gm-orchestra", "gm-techniques"])
    parser.add_argument("--notes", type=int, default=None, help="test notes per dataset (default: all)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--figure-note", type=int, default=3, help="which test note the figure shows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load_before = os.getloadavg()
    reports = {}
    for model in args.models:
        data = dataset_of(model)
        bundle = load_bundle(model, "cpu")
        bundle.inverters["harmonic-fixed-f0"] = fixed_f0(bundle.inverters["harmonic"])
        reports[model] = bench(bundle, data=data, repeats=args.repeats, max_notes=args.notes,
                               judges_dir=REPO / "runs" / f"judges-{data.name}")
        print(format_report(reports[model]))
    result = {"models": reports, "load_average": {"start": [round(v, 2) for v in load_before],
                                                  "end": [round(v, 2) for v in os.getloadavg()]}}
    print(table(reports))
    print(f"load average {result['load_average']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    if args.figure:
        figure(args.models[0], args.figure, args.figure_note)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
