"""The harmonic inverter's controls and synthesis in C against the same steps in torch, side by side.

For each bundle, thread count and pitch (C2 to C5: low notes have the most harmonics), one note
is synthesized (decoder + harmonic inverter, ``Bundle.synthesize``) alternately with the C
steps after the network (``_harmonic.c``, what the daemon and ``generate`` use) and with the torch
reference (``HarmonicInverter.controls`` and ``spectra``, what training differentiates), in rounds, so that both
see the same load; medians over every round. Also 100-iteration Griffin-Lim of the same note,
for the speed-up, and 32 notes batched.

    python benchmarks/harmonic_synthesis.py [--models gm-orchestra gm-techniques] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from live_latency import cpu_name  # noqa: E402

from waeserver.dsp.pitch import midi_to_f0  # noqa: E402
from waeserver.dsp.spectral import griffin_lim, mel_to_linear  # noqa: E402
from waeserver.sound.bench import GLA_ITERATIONS, note_inputs  # noqa: E402
from waeserver.sound.bundle import load_bundle  # noqa: E402

PITCHES = (36, 48, 60, 72)


def ms(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - start))
    return out


@contextlib.contextmanager
def torch_synthesis(inv):
    """The harmonic inverter ``inv`` computing its controls and spectra with torch's reference instead
    of its C steps, meanwhile."""
    inv.native = False
    try:
        yield
    finally:
        inv.native = True


def side_by_side(inv, fn, rounds: int, repeats: int) -> dict:
    """Median milliseconds of ``fn()`` with the C synthesis and with torch's, alternating in rounds."""
    times = {"c": [], "torch": []}
    for _ in range(rounds):
        for road in times:
            with torch_synthesis(inv) if road == "torch" else contextlib.nullcontext():
                fn()
                times[road] += ms(fn, repeats)
    return {road: round(statistics.median(t), 3) for road, t in times.items()}


@torch.no_grad()
def one_bundle(name: str, rounds: int, repeats: int) -> dict:
    bundle = load_bundle(name, "cpu")
    inv = bundle.inverters["harmonic"]
    _, velocity, style, z = note_inputs(bundle, 1)
    many = note_inputs(bundle, 32)
    figures = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        notes = {}
        for pitch in PITCHES:
            note = (torch.tensor([pitch]), velocity, style, z)
            notes[pitch] = side_by_side(inv, lambda note=note: bundle.synthesize(*note), rounds, repeats)
        c3 = torch.tensor([48])
        mel = bundle.decode_mel(c3, velocity, style, z)
        f0 = midi_to_f0(c3)
        alone = side_by_side(inv, lambda mel=mel, f0=f0: inv(mel, f0), rounds, repeats)
        gla = statistics.median(ms(lambda mel=mel: griffin_lim(mel_to_linear(mel, bundle.spectral), bundle.spectral,
                                                                 n_iter=GLA_ITERATIONS), 5))
        batch = side_by_side(inv, lambda: bundle.synthesize(*many), 2, 3)
        figures[f"{threads} threads"] = {
            "decoder_plus_harmonic_ms": notes, "harmonic_alone_ms_c3": alone, "gla_ms_c3": round(gla, 1),
            "gla_over_harmonic_c3": {road: round(gla / t, 1) for road, t in alone.items()},
            "gla_over_decoder_plus_harmonic_c3": {road: round(gla / t, 1) for road, t in notes[48].items()},
            "notes_per_second_batched_32": {road: round(32 / (t / 1000), 1) for road, t in batch.items()}}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gm-orchestra", "gm-techniques"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"machine": cpu_name(), "torch": torch.__version__,
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "bundles": {name: one_bundle(name, args.rounds, args.repeats) for name in args.models}}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
