"""Time to refill the whole render-ahead cache after a style change, its memory, and the cost of one note.

The same renderer the daemon runs (model, resampling to 48 kHz, levelling the velocity layers,
fades and loops), in this process with one torch thread (as ``serve`` uses on a CPU): for each
refill batch size (pitches, each at every layer), the time to render every pitch of the model
again after a fader move, with the bundle's velocity layers and, in the same run, with one layer
(the daemon before velocity layers) and, with the harmonic inverter, with its torch synthesis in
place of the C one (the daemon before the C step); the bytes the filled cache holds; the time of a one-pitch
priority render; the resampling from the model's rate, polyphase filter against the FFT the
renderer uses; and how far the cached renders are from their pitch (YIN).

    python benchmarks/cache_refill.py [--model B] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harmonic_synthesis import torch_synthesis  # noqa: E402
from live_latency import cpu_name, pick_model  # noqa: E402

from waeserver.dsp.resample import to_rate  # noqa: E402
from waeserver.live.cache import RenderCache  # noqa: E402
from waeserver.live.controls import ControlState  # noqa: E402
from waeserver.live.notes import layer_velocities  # noqa: E402
from waeserver.live.renderer import Renderer  # noqa: E402
from waeserver.sound.bundle import load_bundle  # noqa: E402

RATE = 48000


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000


def refill(bundle, velocities, batch: int, repeats: int) -> tuple[dict, Renderer]:
    """Whole refills after fader moves at ``batch`` pitches a batch; the figures and the renderer."""
    state = ControlState(bundle.styles, bundle.latent_size)   # each case from the same start
    cache = RenderCache(bundle.pitch_range, velocities=velocities)
    renderer = Renderer(bundle, state, cache, RATE, batch=batch)
    renderer.retarget()
    renderer.warm_up()
    renderer.fill()
    times = []
    for r in range(repeats):
        state.set_style(bundle.styles[-1], 0.2 + 0.2 * r)   # a fader move: every pitch goes stale
        renderer.retarget()
        times.append(renderer.fill())
    seconds = float(np.median(times))
    notes = len(list(cache.pitches())) * len(velocities)
    return {"seconds": round(seconds, 3), "ms_per_note": round(seconds * 1000 / notes, 2),
            "cache_mb": round(cache.nbytes() / 1e6, 1)}, renderer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,4,8,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    model, about = pick_model(args.model)
    bundle = load_bundle(model, args.device)
    layers = layer_velocities(bundle)
    n_pitches = bundle.pitch_range[1] - bundle.pitch_range[0] + 1
    report = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, "
                         f"device {bundle.device}, torch threads {torch.get_num_threads()}",
              "model": about, "pitches": n_pitches, "layers": list(layers), "refill": {}, "refill_one_layer": {}}
    for batch in [int(b) for b in args.batches.split(",")]:
        report["refill"][batch], renderer = refill(bundle, layers, batch, args.repeats)
        report["refill_one_layer"][batch], _ = refill(bundle, (100,), batch, args.repeats)
        if hasattr(bundle.inverter, "native"):
            with torch_synthesis(bundle.inverter):
                report.setdefault("refill_torch_synthesis", {})[batch], _ = refill(bundle, layers, batch, args.repeats)
            print(f"batch {batch:3d}, torch's synthesis: whole cache in "
                  f"{report['refill_torch_synthesis'][batch]['seconds']:.3f} s")
        print(f"batch {batch:3d}: whole cache ({n_pitches} pitches x {len(layers)} layers) in "
              f"{report['refill'][batch]['seconds']:.3f} s, {report['refill'][batch]['cache_mb']} MB; "
              f"one layer {report['refill_one_layer'][batch]['seconds']:.3f} s, "
              f"{report['refill_one_layer'][batch]['cache_mb']} MB")
    cache = renderer.cache
    single = []
    for i in range(20):
        t0 = time.perf_counter()
        renderer.render_now([bundle.pitch_range[0] + i % n_pitches])
        single.append((time.perf_counter() - t0) * 1000)
    report["priority_pitch_ms"] = {"p50": round(float(np.percentile(single, 50)), 2),
                                   "p99": round(float(np.percentile(single, 99)), 2)}
    print(f"one priority pitch ({len(layers)} layers): p50 {report['priority_pitch_ms']['p50']} ms, "
          f"p99 {report['priority_pitch_ms']['p99']} ms")
    with torch.inference_mode():
        b = 24
        waves = bundle.synthesize(torch.full((b,), 60), torch.full((b,), 0.8), torch.eye(len(bundle.styles))[
            torch.arange(b) % len(bundle.styles)], torch.zeros(b, bundle.latent_size)).cpu().numpy()
    ratio = Fraction(RATE, bundle.sample_rate).limit_denominator(1000)
    report["resample_ms_per_note"] = {
        "polyphase": round(median_ms(lambda: resample_poly(waves, ratio.numerator, ratio.denominator, axis=-1),
                                     5) / b, 2),
        "fft": round(median_ms(lambda: to_rate(waves, bundle.sample_rate, RATE), 5) / b, 2)}
    print(f"resampling to {RATE} Hz, ms a note: {report['resample_ms_per_note']}")
    from waeserver.dsp.pitch import cents_off, estimate_pitch

    errors = []
    checked = range(bundle.pitch_range[0], bundle.pitch_range[1] + 1, 4)
    for p in checked:
        for note in cache.notes[p]:
            est = estimate_pitch(note.wave[: RATE // 2], RATE)
            if est is not None:
                errors.append(abs(cents_off(est.hz, p)))
    report["pitch_cents_abs_median"] = round(float(np.median(errors)), 1) if errors else None
    report["pitch_voiced"] = f"{len(errors)} of {len(checked) * len(layers)}"
    print(f"cached renders: median pitch error {report['pitch_cents_abs_median']} cents "
          f"({report['pitch_voiced']} voiced)")
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
