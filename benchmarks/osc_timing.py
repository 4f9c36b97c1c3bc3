"""How exactly OSC notes keep time in ``waeserver serve``, measured from outside through JACK.

A dummy JACK server, the daemon as its own process, and a JACK client recording waeserver:out_1.
``--notes`` notes 125 ms apart, with a control change (a style fader, the latent point, the gain)
between every two, are sent over OSC either as bundles time-tagged 125 ms apart and sent
``--ahead`` seconds early (sclang's ``s.latency`` way; the default) or, with ``--plain``, as plain
messages sent at their time. The deviation of a note is its onset's distance (in the recording's
frames) from the first onset, less its tag's distance from the first tag.

    python benchmarks/osc_timing.py [--model B] [--notes 48] [--plain] [--realtime] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from live_latency import RATE, Osc, Probe, cpu_name, free_port, pick_model, start_daemon, start_jackd, stop_all  # noqa: E402

from waeserver.live.osc import encode  # noqa: E402
from waeserver.live.timing import encode_bundle  # noqa: E402

SPACING = 0.125


def onsets(audio: np.ndarray, gap: int) -> np.ndarray:
    """Frames where sound starts after at least ``gap`` silent frames."""
    loud = np.flatnonzero(audio)
    return loud[np.diff(np.concatenate([[-gap - 1], loud])) > gap] if len(loud) else loud


def measure(model: str, notes: int, ahead: float, plain: bool, realtime: bool) -> dict:
    server = f"waetiming-{os.getpid()}"
    jackd = start_jackd(server, realtime)
    port = free_port()
    daemon = start_daemon(model, server, port, "--release", "0.02", "--latency-budget-ms", "0")
    probe = Probe(server, seconds=int(notes * SPACING) + 10)
    osc = Osc(port)
    osc.send("/wae/model/info")
    styles = osc.wait("/wae/model/info.reply", 5.0)[4:]
    dest = ("127.0.0.1", port)
    try:
        mark = probe.n
        start = time.time() + 0.5
        tags = [start + SPACING * i for i in range(notes)]
        for i, tag in enumerate(tags):
            note = ("/wae/note", [60 + i % 7, 100, 0.04])
            control = [("/wae/style", [styles[i % len(styles)], 0.5 + 0.25 * (i % 3)]),
                       ("/wae/z", [0.2 * (i % 4), 0.0, 0.0]), ("/wae/gain", [1.0 - 0.2 * (i % 2)])][i % 3]
            if plain:
                time.sleep(max(0.0, tag - time.time()))
                osc.sock.sendto(encode(*note), dest)
                time.sleep(max(0.0, tag + SPACING / 2 - time.time()))
                osc.sock.sendto(encode(*control), dest)
            else:
                time.sleep(max(0.0, tag - ahead - time.time()))
                osc.sock.sendto(encode_bundle(tag, [note]), dest)
                osc.sock.sendto(encode_bundle(tag + SPACING / 2, [control]), dest)
        time.sleep(tags[-1] + 0.5 - time.time())
        osc.send("/wae/status")
        status = osc.wait("/wae/status.reply", 5.0)
        audio = probe.rec[mark:probe.n].copy()
        xruns = probe.xruns
    finally:
        stop_all(osc, probe, daemon, jackd)
    found = onsets(audio, int(0.02 * RATE))
    out = {"mode": "plain messages on time" if plain else f"bundles tagged, sent {ahead} s ahead",
           "notes": notes, "onsets": len(found), "xruns": xruns,
           "late_bundles": status[12] if len(status) > 12 else None}
    if len(found) == notes:
        deviation = (found - found[0]) - (np.array(tags) - tags[0]) * RATE
        out.update({"max_deviation_frames": round(float(np.abs(deviation).max()), 2),
                    "median_deviation_frames": round(float(np.median(np.abs(deviation))), 2),
                    "max_deviation_ms": round(float(np.abs(deviation).max()) * 1000 / RATE, 3),
                    "median_deviation_ms": round(float(np.median(np.abs(deviation))) * 1000 / RATE, 3),
                    "deviations_frames": [round(float(d), 2) for d in deviation]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle (default gm-orchestra if trained, else a random test bundle)")
    parser.add_argument("--notes", type=int, default=48)
    parser.add_argument("--ahead", type=float, default=0.2, help="seconds a bundle is sent before its time")
    parser.add_argument("--plain", action="store_true", help="plain messages sent on time instead of bundles")
    parser.add_argument("--realtime", action="store_true", help="run jackd with -R (SCHED_FIFO where allowed)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model, about = pick_model(args.model)
    run = measure(model, args.notes, args.ahead, args.plain, args.realtime)
    report = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, dummy JACK {RATE} Hz / 256 frames"
                         f"{', realtime' if args.realtime else ''}", "model": about, "run": run}
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
