"""Listen-worthy example WAVs from a bundle.

    python benchmarks/examples.py --model gm-orchestra --out examples/gm-orchestra [--data DIR]

Writes into OUT:

* ``style-NAME-C4.wav`` for every style: C4 (or the style's nearest note), velocity 100, z = 0;
* ``scale-NAME.wav``: a C major scale over the style's range, one note every 0.4 s;
* ``morph-A-to-B.wav``: C4 with the faders sliding from the first style to the second in 8 steps;
* ``latent-walk.wav``: C4 of the first style, z moving along each latent axis from -2 to 2;
* ``inversion-FILE-{real,INVERTER,gla}.wav``: one test note as recorded, through each of the
  bundle's real-time inverters and through
  100-iteration Griffin-Lim (needs the dataset: the card's, or ``--data``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from waeserver.dsp.pitch import midi_to_f0
from waeserver.dsp.spectral import griffin_lim, mel_to_linear
from waeserver.sound.bundle import MODELS_DIR, load_bundle


def sequence(waves: np.ndarray, rate: int, step_s: float) -> np.ndarray:
    """Overlap notes ``[N, T]`` every ``step_s`` seconds into one track, normalised to -1 dBFS."""
    step = int(step_s * rate)
    out = np.zeros(step * (len(waves) - 1) + waves.shape[1], dtype=np.float32)
    for i, w in enumerate(waves):
        out[i * step:i * step + len(w)] += w
    return out / max(1e-6, float(np.abs(out).max())) * 0.89


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gm-orchestra")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data")
    args = parser.parse_args()
    torch.set_num_threads(2)
    b = load_bundle(args.model, "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    rate, n_styles = b.sample_rate, len(b.styles)
    ranges = b.card.get("style_ranges") or {}
    vel = 100 / 127

    def one_hot(k: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(k), n_styles).float()

    def clip(p: int, name: str) -> int:
        low, high = ranges.get(name, b.pitch_range)
        return int(min(max(p, low), high))

    for k, name in enumerate(b.styles):
        pitch = clip(60, name)
        wave = b.synthesize([pitch], [vel], one_hot(k)[None], torch.zeros(1, b.latent_size))[0]
        sf.write(args.out / f"style-{name}-C4.wav", wave.numpy(), rate, subtype="PCM_16")
        low, high = ranges.get(name, b.pitch_range)
        scale = [p for p in range(low, high + 1) if p % 12 in (0, 2, 4, 5, 7, 9, 11)][:15]
        waves = b.synthesize(scale, [vel] * len(scale), one_hot(k).expand(len(scale), -1),
                             torch.zeros(len(scale), b.latent_size)).numpy()
        sf.write(args.out / f"scale-{name}.wav", sequence(waves, rate, 0.4), rate, subtype="PCM_16")
    if n_styles > 1:
        w = torch.linspace(0, 1, 8)[:, None]
        style = (1 - w) * one_hot(0) + w * one_hot(1)
        pitch = clip(60, b.styles[0])
        waves = b.synthesize([pitch] * 8, [vel] * 8, style, torch.zeros(8, b.latent_size)).numpy()
        sf.write(args.out / f"morph-{b.styles[0]}-to-{b.styles[1]}.wav", sequence(waves, rate, 0.6), rate,
                 subtype="PCM_16")
    z = torch.zeros(5 * b.latent_size, b.latent_size)
    for d in range(b.latent_size):
        z[5 * d:5 * d + 5, d] = torch.linspace(-2, 2, 5)
    pitch = clip(60, b.styles[0])
    waves = b.synthesize([pitch] * len(z), [vel] * len(z), one_hot(0).expand(len(z), -1), z).numpy()
    sf.write(args.out / "latent-walk.wav", sequence(waves, rate, 0.6), rate, subtype="PCM_16")

    data = args.data or (b.card.get("training_data") or {}).get("path")
    if data and not Path(data).is_absolute() and not Path(data).is_dir():
        data = MODELS_DIR.parent / data   # cards give the repository-relative path
    if data and Path(data).is_dir():
        from waeserver.data.dataset import NoteDataset

        ds = NoteDataset(data)
        for i in ds.indices("test")[::max(1, len(ds.indices("test")) // 4)][:4]:
            row = ds.rows[int(i)]
            mel = torch.from_numpy(np.array(ds.features()[int(i)]))[None]
            stem = Path(row["file"]).stem
            with torch.no_grad():
                inverted = {name: inv(mel, midi_to_f0(torch.tensor([row["pitch"]])))[0]
                            for name, inv in b.inverters.items()}
                gla = griffin_lim(mel_to_linear(mel, ds.spectral), ds.spectral)[0]
            sf.write(args.out / f"inversion-{stem}-real.wav", ds.audio(int(i)), rate, subtype="PCM_16")
            for name, wave in inverted.items():
                sf.write(args.out / f"inversion-{stem}-{name}.wav", wave.numpy(), rate, subtype="PCM_16")
            sf.write(args.out / f"inversion-{stem}-gla.wav", gla.numpy(), rate, subtype="PCM_16")
    print(f"wrote {len(list(args.out.glob('*.wav')))} WAV files to {args.out}")


if __name__ == "__main__":
    main()
