"""Xruns of a dummy JACK server: idle, then with ``waeserver serve`` under load, in the same run.

Each round first lets a probe client alone count the server's xruns for ``--seconds`` (the
baseline a loaded machine shows even idle). Then the daemon joins; with the sustain pedal down the
probe strikes a 32-note chord every second (all 32 note-ons in one period, on 32 different frames,
over JACK MIDI), so 32 voices keep sounding, while a style fader moves with 100 OSC messages a
second, for as long again; then the daemon stops. ``--rounds`` repeats this on the same JACK
server, so idle and loaded stretches alternate. Both counts come from the same probe's xrun
callback; the daemon's slowest callback and load come from ``/wae/status``. The fader messages
come from a process of their own, so the probe's Python callback shares its interpreter lock with
nothing busy (as in the idle baseline). jackd's log (``--jack-log``) names the client each xrun
waited for: the daemon, a probe client, or the driver itself.

    python benchmarks/live_xruns.py [--model B] [--seconds 60] [--rounds 1] [--realtime]
                                    [--jack-log jackd.log] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from live_latency import PERIOD, RATE, Osc, Probe, cpu_name, free_port, pick_model, start_daemon, start_jackd


def move_fader(port: int, style: str, rate: float, seconds: float, sent) -> None:
    """Send ``/wae/style style v`` ``rate`` times a second for ``seconds`` (a process of its own)."""
    from pythonosc.udp_client import SimpleUDPClient

    client = SimpleUDPClient("127.0.0.1", port)
    t0 = time.monotonic()
    n = 0
    while (t := time.monotonic() - t0) < seconds:
        client.send_message("/wae/style", [style, 0.5 + 0.5 * math.sin(2 * math.pi * 0.2 * t)])
        n += 1
        time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
    sent.value = n


def xrun_causes(log: Path, start: int) -> tuple[dict, int]:
    """What jackd blamed for the xruns it printed after byte ``start`` of its log: a client that
    was not finished (by name, the per-run suffix dropped; one late cycle can print a line for each
    client it held up, and another when the next cycle finds it still triggered), or the driver."""
    with open(log, "rb") as f:
        f.seek(start)
        data = f.read()
    text = data.decode(errors="replace")
    causes: Counter = Counter()
    for line in text.splitlines():
        if m := re.search(r"client = (\S+?)(?:-[0-9a-f]{6})? was not (\w+)", line):
            causes[f"{m[1]} not {m[2]}"] += 1
        elif "XRun" in line or "xrun" in line.lower():
            causes[re.sub(r"[0-9.]+", "N", line.strip())[:80]] += 1
    return dict(causes), start + len(data)


def loaded_round(model: str, server: str, args) -> dict:
    """The daemon under load for ``args.seconds``: xruns the probe saw, and the daemon's figures."""
    port = free_port()
    daemon = start_daemon(model, server, port)
    try:
        probe = Probe(server, seconds=1)
        osc = Osc(port)
        osc.send("/wae/model/info")
        info = osc.wait("/wae/model/info.reply", 5.0)
        low, style = 40, info[-1]
        ctx = multiprocessing.get_context("spawn")
        sent = ctx.Value("i", 0)
        mover = ctx.Process(target=move_fader, args=(port, style, args.fader_rate, args.seconds, sent))
        chord_on = [(i * (PERIOD // args.voices), bytes([0x90, low + i, 90])) for i in range(args.voices)]
        probe.midi(bytes([0xB0, 64, 127]))
        base = probe.xruns
        t_start = time.monotonic()
        mover.start()
        voices, callback_ms = [], []
        while time.monotonic() - t_start < args.seconds:
            probe.midi_many(chord_on)
            time.sleep(0.5)
            osc.send("/wae/status")
            status = osc.wait("/wae/status.reply", 1.0)
            if status:
                voices.append(status[0])
                callback_ms.append(status[11])
            time.sleep(0.5)
        mover.join()
        elapsed = time.monotonic() - t_start
        xruns = probe.xruns - base
        probe_ms = 1000.0 * probe.slowest
        osc.send("/wae/status")
        status = osc.wait("/wae/status.reply", 5.0)
        probe.midi(bytes([0xB0, 64, 0]))
        osc.close()
        probe.close()
    finally:
        daemon.terminate()
        daemon.wait(10)
    return {"xruns": xruns, "seconds": round(elapsed, 1), "fader_msgs_per_s": round(sent.value / elapsed, 1),
            "voices_sounding_min": min(voices), "voices_sounding_mean": round(sum(voices) / len(voices), 1),
            "daemon_xruns": status[1], "jack_cpu_load": round(status[2], 1),
            "callback_ms_max": round(max(callback_ms), 2), "probe_callback_ms_max": round(probe_ms, 2),
            "render_ms_p50": round(status[3], 2), "render_ms_p99": round(status[4], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=1, help="idle then loaded, this many times")
    parser.add_argument("--voices", type=int, default=32)
    parser.add_argument("--fader-rate", type=float, default=100.0, help="fader messages a second")
    parser.add_argument("--realtime", action="store_true", help="run jackd with -R (SCHED_FIFO where allowed)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--jack-log", type=Path, help="keep jackd's output here (default: a temporary file)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.setswitchinterval(0.0005)  # the probe's Python callback waits little for its interpreter lock
    model, about = pick_model(args.model)
    server = f"waebench-{uuid.uuid4().hex[:8]}"
    log = args.jack_log or Path(tempfile.mkdtemp()) / "jackd.log"
    jackd = start_jackd(server, args.realtime, log=log)
    report = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, "
                         f"dummy JACK {RATE} Hz / {PERIOD} frames{', realtime' if args.realtime else ''}",
              "model": about, "seconds": args.seconds, "rounds": []}
    try:
        for r in range(args.rounds):
            seen = log.stat().st_size
            idle = Probe(server, seconds=1, daemon="")
            time.sleep(args.seconds)
            idle_xruns = idle.xruns
            idle.close()
            idle_causes, seen = xrun_causes(log, seen)
            loaded = loaded_round(model, server, args)
            loaded_causes, seen = xrun_causes(log, seen)
            report["rounds"].append({"idle_xruns": idle_xruns, **loaded,
                                     "idle_causes": idle_causes, "loaded_causes": loaded_causes})
            print(f"round {r + 1}: idle JACK {idle_xruns} xruns in {args.seconds:.0f} s; with the daemon "
                  f"{loaded['xruns']} xruns in {loaded['seconds']:.0f} s ({loaded['voices_sounding_mean']} voices "
                  f"on average, {loaded['fader_msgs_per_s']} fader messages/s, slowest callback "
                  f"{loaded['callback_ms_max']} ms of a {1000 * PERIOD / RATE:.2f} ms period; the probe's "
                  f"{loaded['probe_callback_ms_max']} ms)", flush=True)
    finally:
        jackd.terminate()
        jackd.wait(10)
    rounds = report["rounds"]
    report["idle_xruns"] = sum(r["idle_xruns"] for r in rounds)
    report["loaded_xruns"] = sum(r["xruns"] for r in rounds)
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
