"""Note-on to first non-zero output sample of ``waeserver serve``, measured from outside through JACK.

A dummy JACK server (48 kHz, 256-frame periods by default), the daemon as its own process, and a
probe: one JACK client that writes MIDI note-ons into waeserver:midi_in at random frame offsets,
another that records waeserver:out_1 (two clients, so JACK runs sender, daemon and recorder in a
chain every period). The latency of a note is the number of frames from its MIDI event to the
first non-zero sample recorded: 0 for a note played on its very frame in the same period. What a
sound card adds after that is JACK's playback latency, reported beside (``output_latency_ms``: the
dummy driver reports two periods).

Two kinds of notes: *cached* (the control state has not changed, the render is fresh) and
*changed* (an OSC fader move arrives in the same period as the note, so the note's render is
stale). Run once with the default latency budget (10 ms) and once with a budget above the render
time, where a changed note waits for its fresh render instead of playing the previous one; with
``--priority-process both``, each with and without the daemon's render process for notes that wait.

    python benchmarks/live_latency.py [--model B] [--notes 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path

import jack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from waeserver.live.jack_client import port_latency  # noqa: E402
from waeserver.live.osc import encode  # noqa: E402

RATE, PERIOD = 48000, 256


def cpu_name() -> str:
    """The CPU's model name (``platform.processor()`` is empty on Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def start_jackd(name: str, realtime: bool = False, rate: int = RATE, period: int = PERIOD,
                log: Path | None = None) -> subprocess.Popen:
    """A dummy JACK server; ``realtime`` gives its threads and its clients' SCHED_FIFO, as on stage.
    ``log`` keeps what jackd prints (it names the client that each xrun waited for)."""
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(["jackd", "-n", name, "-R" if realtime else "--no-realtime", "-d", "dummy",
                             "-r", str(rate), "-p", str(period)], stdout=out, stderr=subprocess.STDOUT)
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    if subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True).returncode != 0:
        proc.kill()
        raise SystemExit("dummy JACK server did not start")
    return proc


def pick_model(name: str | None) -> tuple[str, str]:
    """The bundle to measure and what it is: the one named, else the shipped gm-orchestra."""
    return (name, name) if name else ("gm-orchestra", "gm-orchestra")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(model: str, server: str, port: int, *extra: str, log: Path | None = None) -> subprocess.Popen:
    """``waeserver serve`` as its own process; returns once it answers OSC. ``log`` keeps what it logs."""
    with open(log or os.devnull, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "waeserver", "serve", "--model", model, "--jack-server", server,
                                 "--osc-port", str(port), "--no-jack-connect", "--preset-dir", tempfile.mkdtemp(),
                                 *extra], stdout=out, stderr=subprocess.STDOUT)
    osc = Osc(port)
    deadline = time.monotonic() + 120
    while True:
        osc.send("/wae/status")
        if osc.wait("/wae/status.reply", 0.5) is not None:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the daemon did not start" + (f": {log.read_text()[-2000:]}" if log else ""))
    osc.close()
    return proc


class Osc:
    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = port

    def send(self, address: str, *args) -> None:
        self.sock.sendto(encode(address, list(args)), ("127.0.0.1", self.port))

    def wait(self, address: str, timeout: float):
        from pythonosc.osc_message import OscMessage

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = OscMessage(self.sock.recv(65536))
            except TimeoutError:
                continue
            if msg.address == address:
                return msg.params
        return None

    def close(self) -> None:
        self.sock.close()


class Probe:
    """A MIDI sender into the daemon and a recorder of its out_1 (two JACK clients, so that JACK
    runs them before and after the daemon: one client doing both closes a loop, and JACK may then
    run it alongside the daemon); xruns counted."""

    def __init__(self, server: str, seconds: int, daemon: str = "waeserver"):
        tag = uuid.uuid4().hex[:6]
        self.sender = jack.Client(f"probe-midi-{tag}", no_start_server=True, servername=server)
        self.client = jack.Client(f"probe-{tag}", no_start_server=True, servername=server)
        self.inp = self.client.inports.register("in")
        self.midi_out = self.sender.midi_outports.register("midi_out")
        self.rec = np.zeros(seconds * self.client.samplerate, np.float32)
        self.n = 0
        self.xruns = 0
        self.slowest = 0.0        # the probe's own slowest callback, seconds
        self.outgoing: deque = deque()
        self.sent: list[int] = []
        self.sender.set_process_callback(self._send)
        self.client.set_process_callback(self._record)
        self.client.set_xrun_callback(self._xrun)
        self.sender.activate()
        self.client.activate()
        if daemon:
            self.client.connect(f"{daemon}:out_1", self.inp)
            self.sender.connect(self.midi_out, f"{daemon}:midi_in")

    def _xrun(self, delay):
        self.xruns += 1

    def _send(self, frames):
        t0 = time.perf_counter()
        self.midi_out.clear_buffer()
        while self.outgoing:
            offset, data = self.outgoing.popleft()
            self.midi_out.write_midi_event(offset, data)
            self.sent.append(self.n + offset)     # recorded later in this same period
        self.slowest = max(self.slowest, time.perf_counter() - t0)

    def _record(self, frames):
        t0 = time.perf_counter()
        if self.n + frames <= len(self.rec):
            self.rec[self.n:self.n + frames] = self.inp.get_array()
            self.n += frames
        self.slowest = max(self.slowest, time.perf_counter() - t0)

    def output_latency(self) -> int:
        """Frames JACK reports from a client's output to the sound card (the playback ports)."""
        ports = self.client.get_ports(is_physical=True, is_input=True, is_audio=True)
        return max((port_latency(p) for p in ports), default=0)

    def midi(self, data: bytes, offset: int = 0) -> int:
        """Send ``data`` at ``offset`` in the next period; returns its frame in the recording."""
        return self.midi_many([(offset, data)])[0]

    def midi_many(self, events: list[tuple[int, bytes]]) -> list[int]:
        """Send ``(offset, data)`` events (offsets ascending) in one period; their frames."""
        count = len(self.sent)
        self.outgoing.extend(events)
        while len(self.sent) < count + len(events):
            # not a tight poll: every wake-up here wants this process's interpreter lock, which the
            # probe's own (Python) callback gives up at each MIDI event it writes
            time.sleep(0.02)
        return self.sent[count:count + len(events)]

    def close(self) -> None:
        for client in (self.sender, self.client):
            client.deactivate()
            client.close()


def stop_all(osc: Osc, probe: Probe, daemon: subprocess.Popen, jackd: subprocess.Popen) -> None:
    osc.close()
    probe.close()
    for proc in (daemon, jackd):
        proc.terminate()
        proc.wait(10)


def first_sound(rec: np.ndarray, frame: int, until: int) -> int | None:
    loud = np.flatnonzero(rec[frame:until])
    return int(loud[0]) if len(loud) else None


def measure(model: str, budget_ms: float, notes: int, seed: int, realtime: bool, priority: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    server = f"waebench-{uuid.uuid4().hex[:8]}"
    jackd = start_jackd(server, realtime)
    port = free_port()
    daemon = start_daemon(model, server, port, "--latency-budget-ms", str(budget_ms), "--release", "0.02",
                          "--priority-process" if priority else "--no-priority-process")
    probe = Probe(server, seconds=int(notes * 0.3 * 2) + 30)
    osc = Osc(port)
    osc.send("/wae/model/info")
    styles = osc.wait("/wae/model/info.reply", 5.0)[4:]
    try:
        results = {"cached": [], "changed": []}
        pitches = list(range(48, 73))
        for kind in ("cached", "changed"):
            for _ in range(notes):
                pitch = int(rng.choice(pitches))
                if kind == "changed":   # a fader move, then the note at most one period later
                    osc.send("/wae/style", styles[-1], float(rng.uniform(0.1, 1.0)))
                offset = int(rng.integers(0, PERIOD))
                sent = probe.midi(bytes([0x90, pitch, 100]), offset)
                time.sleep(0.06)
                probe.midi(bytes([0x80, pitch, 0]))
                time.sleep(0.12)                 # release 20 ms: silent again before the next note
                heard = first_sound(probe.rec, sent, probe.n)
                if heard is not None:
                    results[kind].append(heard * 1000.0 / RATE)
        output_ms = probe.output_latency() * 1000.0 / RATE
        osc.send("/wae/status")
        status = osc.wait("/wae/status.reply", 5.0)
    finally:
        stop_all(osc, probe, daemon, jackd)
    out = {"budget_ms": budget_ms, "priority_process": priority, "output_latency_ms": round(output_ms, 3)}
    for kind, ms in results.items():
        ms = np.array(ms)
        out[kind] = {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 3),
                     "p99_ms": round(float(np.percentile(ms, 99)), 3), "max_ms": round(float(ms.max()), 3)}
    out["render_ms_p50"], out["render_ms_p99"] = round(status[3], 2), round(status[4], 2)
    out["cache_hits"], out["cache_misses"], out["standins"] = status[6], status[7], status[10]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle (default gm-orchestra if trained, else a random test bundle)")
    parser.add_argument("--notes", type=int, default=200, help="notes of each kind")
    parser.add_argument("--budgets", default="10,100", help="latency budgets (ms) to run with")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--realtime", action="store_true", help="run jackd with -R (SCHED_FIFO where allowed)")
    parser.add_argument("--priority-process", choices=("on", "off", "both"), default="on",
                        help="the daemon's render process for notes that wait (both: each budget with and without)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    model, about = pick_model(args.model)
    report = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, "
                         f"dummy JACK {RATE} Hz / {PERIOD} frames{', realtime' if args.realtime else ''}",
              "model": about, "runs": []}
    modes = {"on": (True,), "off": (False,), "both": (True, False)}[args.priority_process]
    for budget in [float(b) for b in args.budgets.split(",")]:
        for priority in modes:
            run = measure(model, budget, args.notes, args.seed, args.realtime, priority)
            report["runs"].append(run)
            print(json.dumps(run))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
