"""Time to refill the whole render-ahead cache after a style change, and the cost of one note.

The same renderer the daemon runs (model, resampling to 48 kHz, fades), in this process with one
torch thread (as ``serve`` uses on a CPU): for each refill batch size, the time to render every
pitch of the model again after a fader move, and the time of a one-note priority render, and how far the cached renders are from their pitch (YIN).

    python benchmarks/cache_refill.py [--model B] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from live_latency import cpu_name, pick_model  # noqa: E402

from waeserver.bundle import load_bundle  # noqa: E402
from waeserver.cache import RenderCache  # noqa: E402
from waeserver.faders import ControlState  # noqa: E402
from waeserver.renderer import Renderer  # noqa: E402

RATE = 48000


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
    n_pitches = bundle.pitch_range[1] - bundle.pitch_range[0] + 1
    report = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, "
                         f"device {bundle.device}, torch threads {torch.get_num_threads()}",
              "model": about, "pitches": n_pitches, "refill": {}}
    for batch in [int(b) for b in args.batches.split(",")]:
        state = ControlState(bundle.styles, bundle.latent_size)   # each batch size from the same start
        cache = RenderCache(bundle.pitch_range)
        renderer = Renderer(bundle, state, cache, RATE, batch=batch)
        renderer.retarget()
        renderer.warm_up()
        renderer.fill()
        times = []
        for r in range(args.repeats):
            state.set_style(bundle.styles[-1], 0.2 + 0.2 * r)   # a fader move: every pitch goes stale
            renderer.retarget()
            times.append(renderer.fill())
        report["refill"][batch] = {"seconds": round(float(np.median(times)), 3),
                                   "ms_per_note": round(float(np.median(times)) * 1000 / n_pitches, 2)}
        print(f"batch {batch:3d}: whole cache ({n_pitches} pitches) in {np.median(times):.3f} s")
    single = []
    for i in range(20):
        t0 = time.perf_counter()
        renderer.render_now([bundle.pitch_range[0] + i % n_pitches])
        single.append((time.perf_counter() - t0) * 1000)
    report["priority_note_ms"] = {"p50": round(float(np.percentile(single, 50)), 2),
                                  "p99": round(float(np.percentile(single, 99)), 2)}
    print(f"one priority note: p50 {report['priority_note_ms']['p50']} ms, p99 {report['priority_note_ms']['p99']} ms")
    from waeserver.pitch import cents_off, estimate_pitch

    errors = []
    for p in range(bundle.pitch_range[0], bundle.pitch_range[1] + 1, 4):
        est = estimate_pitch(cache.notes[p].wave[: RATE // 2], RATE)
        if est is not None:
            errors.append(abs(cents_off(est.hz, p)))
    report["pitch_cents_abs_median"] = round(float(np.median(errors)), 1) if errors else None
    report["pitch_voiced"] = f"{len(errors)} of {len(range(bundle.pitch_range[0], bundle.pitch_range[1] + 1, 4))}"
    print(f"cached renders: median pitch error {report['pitch_cents_abs_median']} cents ({report['pitch_voiced']} voiced)")
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
