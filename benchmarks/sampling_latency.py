"""Live sampling latency of ``waeserver serve``: from the end of a take to the new latent point.

A dummy JACK server (48 kHz, 256-frame periods), the daemon as its own process, and a JACK client
of this script that plays a FluidSynth flute note (FluidR3_GM, C5, velocity 100, held 1 s) into
waeserver:in_1 each time it sends ``/wae/sample/record SECONDS``. Two figures per take:

- *daemon*: from the JACK period that completed the take to the reply sent, as the daemon logs it
  (the take read out, resampled to the model's rate, the note found and checked, encoded, the
  latent point set, the reply sent);
- *start*: from the request's arrival to the take's first frame, as the daemon logs it (the
  sampler's thread woken, the take armed, the next period);
- *overrun*: how much longer than SECONDS the take lasted by the system clock (a dummy JACK
  server on a loaded machine runs late: its periods come later than their time);
- *client*: the reply's arrival less the request's sending less SECONDS: the three above and the
  OSC round trip.

Each take's point is kept with the xruns JACK reported meanwhile (a period lost to an xrun
changes the note taken, and so its point), beside those of as long a time before the first take,
with nothing recorded. Between takes the daemon is given ``--pause`` seconds
to render its notes again for the new point (as a performer would play them), so each take is
measured against a settled daemon.

    python benchmarks/sampling_latency.py [--model B] [--takes 7] [--seconds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path

import jack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from live_latency import PERIOD, RATE, Osc, cpu_name, free_port, pick_model, start_daemon, start_jackd  # noqa: E402

LEAD_S = 0.2     # silence before the note: the take has begun by then
DAEMON_MS = re.compile(r"a take encoded: .* replied ([\d.]+) ms after the take's end "
                       r"\(which began (-?[\d.]+) ms after the request and lasted ([\d.]+) s")


def flute_note() -> np.ndarray:
    from waeserver.data.soundfont import NoteRenderer, find_soundfont

    renderer = NoteRenderer(find_soundfont("FluidR3_GM"), RATE)
    return renderer.render(73, 72, 100, 1.0, int(1.6 * RATE))


class InputFeeder:
    """A JACK client whose output feeds waeserver:in_1: each :meth:`play` queues one sound, cut
    into periods that its process callback hands over one by one."""

    def __init__(self, server: str):
        self.client = jack.Client(f"sampling-feeder-{uuid.uuid4().hex[:6]}", no_start_server=True,
                                  servername=server)
        self.port = self.client.outports.register("out")
        self.blocks: deque[np.ndarray] = deque()
        self.client.set_process_callback(self._process)
        self.client.activate()
        self.client.connect(self.port, "waeserver:in_1")

    def _process(self, frames: int) -> None:
        out = self.port.get_array()
        out[:] = self.blocks.popleft() if self.blocks and len(self.blocks[0]) == frames else 0.0

    def play(self, sound: np.ndarray) -> None:
        n = self.client.blocksize
        sound = np.concatenate([np.zeros(int(LEAD_S * RATE), np.float32), sound.astype(np.float32)])
        sound = np.pad(sound, (0, -len(sound) % n))
        self.blocks.extend(sound.reshape(-1, n))

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def measure(model: str, takes: int, seconds: float, pause: float) -> dict:
    server = f"waesampling-{os.getpid()}"
    jackd = start_jackd(server)
    port = free_port()
    log_path = Path(tempfile.mkdtemp()) / "daemon.log"
    daemon = start_daemon(model, server, port, "--device", "cpu", log=log_path)
    osc = Osc(port)
    feeder = None
    try:
        note = flute_note()
        feeder = InputFeeder(server)
        time.sleep(pause)   # the start's refill done

        def xruns() -> int:
            osc.send("/wae/status")
            return osc.wait("/wae/status.reply", 5.0)[1]

        before = xruns()
        time.sleep(seconds)
        idle_xruns = xruns() - before   # as long as a take, with nothing recorded: the machine's own
        client_ms, points, take_xruns = [], [], []
        for _ in range(takes):
            before = xruns()
            t0 = time.monotonic()
            osc.send("/wae/sample/record", float(seconds))
            feeder.play(note)
            point = osc.wait("/wae/sample.reply", seconds + 30)
            t1 = time.monotonic()
            if point is None:
                raise SystemExit(f"no /wae/sample.reply: {log_path.read_text()[-2000:]}")
            client_ms.append((t1 - t0 - seconds) * 1000.0)
            points.append([round(float(v), 4) for v in point])
            take_xruns.append(xruns() - before)   # during the take and its encoding
            time.sleep(pause)
    finally:
        if feeder is not None:
            feeder.close()
        osc.close()
        daemon.terminate()
        daemon.wait(10)
        jackd.terminate()
        jackd.wait(5)
    logged = [[float(v) for v in m.groups()] for m in DAEMON_MS.finditer(log_path.read_text())]
    if len(logged) != takes:
        raise SystemExit(f"{len(logged)} of {takes} takes in the daemon's log")
    figures = {"daemon_ms": [d for d, _, _ in logged], "start_ms": [s for _, s, _ in logged],
               "overrun_ms": [round((w - seconds) * 1000.0, 1) for _, _, w in logged],
               "client_ms": [round(v, 1) for v in client_ms]}
    return {"takes": takes, "seconds": seconds, "pause_s": pause, "points": points, "xruns": take_xruns,
            "xruns_idle": idle_xruns, **figures,
            **{f"{k}_median": float(np.median(v)) for k, v in figures.items()},
            **{f"{k}_max": float(max(v)) for k, v in figures.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="bundle (default gm-orchestra)")
    p.add_argument("--takes", type=int, default=7)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--pause", type=float, default=4.0, help="seconds between takes (the refill)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    model, what = pick_model(args.model)
    result = {"model": what, "cpu": cpu_name(), "cores": os.cpu_count(), "jack": f"dummy, {RATE} Hz, {PERIOD} frames",
              **measure(model, args.takes, args.seconds, args.pause)}
    print(f"{what} on {result['cpu']} ({result['cores']} cores): {args.takes} takes of {args.seconds:g} s; "
          "medians (max): end of take to reply {daemon_ms_median:.1f} ms ({daemon_ms_max:.1f}), request to take "
          "{start_ms_median:.1f} ms ({start_ms_max:.1f}), overrun {overrun_ms_median:.1f} ms ({overrun_ms_max:.1f}), "
          "client {client_ms_median:.1f} ms ({client_ms_max:.1f})"
          .format(**result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
