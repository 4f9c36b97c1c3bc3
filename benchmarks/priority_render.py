"""What a priority render costs, stage by stage: the decoder, the inverter, resampling to the output
rate, shaping (levels, loop, fades), and the round trip through the render process; and how long
a waiting note waits when the render process hands the notes over in two parts (the first
``HEAD_S`` as soon as it is made: ``first_part``; the whole notes after: ``two_parts``).

A note after a control change waits for the layers it blends (one or two of the bundle's three);
this measures one pitch with 1, 2 and 3 layers, one torch thread, on the CPU unless ``--device``
says otherwise, as the daemon's render process runs it.

    python benchmarks/priority_render.py [--model gm-orchestra] [--repeats 40] [--json out.json]
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

from live_latency import cpu_name  # noqa: E402

from waeserver.dsp.pitch import midi_to_f0  # noqa: E402
from waeserver.dsp.resample import to_rate  # noqa: E402
from waeserver.live.notes import layer_velocities, shape_layers, synthesize_notes  # noqa: E402
from waeserver.live.render_worker import RenderWorker  # noqa: E402
from waeserver.sound.bundle import load_bundle  # noqa: E402

RATE = 48000


def timed(fn, repeats: int) -> tuple[dict, object]:
    fn()
    ms, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ms.append((time.perf_counter() - t0) * 1000.0)
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p99": round(float(np.percentile(ms, 99)), 2)}, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gm-orchestra")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pitch", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_bundle(args.model, args.device)
    velocities = layer_velocities(bundle)
    styles = np.eye(len(bundle.styles), dtype=np.float32)[:1]
    z = np.zeros((1, bundle.latent_size), np.float32)
    (_, levels), = synthesize_notes(bundle, [args.pitch], velocities, styles, z, RATE)
    worker = RenderWorker(str(bundle.path), args.device, RATE, velocities)
    report = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, device {bundle.device}, one torch thread",
              "model": str(bundle.path), "pitch": args.pitch, "velocities": list(velocities), "layers": {}}
    try:
        for n in range(1, len(velocities) + 1):
            layers = tuple(range(len(velocities) - n, len(velocities)))   # the loudest n, as a note at 100 needs 2
            lv = (tuple(levels[0][i] for i in layers), levels[1]) if n < len(velocities) else None
            dev = bundle.device
            pitch = torch.full((n,), args.pitch, dtype=torch.int64, device=dev)
            vel = torch.tensor([velocities[i] for i in layers], dtype=torch.float32, device=dev) / 127
            style, zz = torch.from_numpy(np.repeat(styles, n, 0)).to(dev), torch.from_numpy(np.repeat(z, n, 0)).to(dev)
            with torch.inference_mode():
                decoder, mel = timed(lambda: bundle.decode_mel(pitch, vel, style, zz), args.repeats)
                inverter, wave = timed(lambda: bundle.inverter(mel, midi_to_f0(pitch)), args.repeats)
            wave = wave.float().cpu().numpy()
            resample, wave = timed(lambda: to_rate(wave, bundle.sample_rate, RATE), args.repeats)
            shaping, _ = timed(lambda: shape_layers(wave, RATE, lv), args.repeats)
            together, _ = timed(lambda: synthesize_notes(bundle, [args.pitch], velocities, styles, z, RATE,
                                                         [layers], [lv]), args.repeats)
            process, _ = timed(lambda: worker.render([args.pitch], styles, z, [layers], [lv]), args.repeats)
            first: list[float] = []

            def in_two():
                t0 = time.perf_counter()
                worker.render([args.pitch], styles, z, [layers], [lv],
                              on_heads=lambda *_: first.append((time.perf_counter() - t0) * 1000.0))

            both, _ = timed(in_two, args.repeats)
            first = first[1:]   # timed() runs it once untimed
            row = {"decoder": decoder, "inverter": inverter, "resample": resample, "shaping": shaping,
                   "in_process": together, "render_process": process,
                   "first_part": {"p50": round(float(np.percentile(first, 50)), 2),
                                  "p99": round(float(np.percentile(first, 99)), 2)} if first else None,
                   "two_parts": both}
            report["layers"][n] = row
            print(f"{n} layer{'s' if n > 1 else ' '}: " + ", ".join(f"{k} {v['p50']} / {v['p99']} ms"
                                                           for k, v in row.items() if v))
    finally:
        worker.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
