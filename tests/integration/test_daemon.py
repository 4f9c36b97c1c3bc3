"""The live daemon end to end: a real dummy JACK server, the daemon, and a probe JACK client that
sends MIDI to waeserver:midi_in and records out_1/out_2."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import jack
import numpy as np
import pytest
import torch
import yaml
from bundles import make_test_bundle
from pythonosc.osc_message import OscMessage

from waeserver import __version__
from waeserver.dsp.pitch import estimate_pitch
from waeserver.live.config import validate
from waeserver.live.daemon import Daemon
from waeserver.live.osc import encode
from waeserver.live.voices import PENDING, PLAYING, RELEASED

RATE, PERIOD = 48000, 256


def start_jackd(name: str, realtime: bool = False) -> subprocess.Popen:
    proc = subprocess.Popen(["jackd", "-n", name, "-R" if realtime else "--no-realtime", "-d", "dummy",
                             "-r", str(RATE), "-p", str(PERIOD)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    if subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True).returncode != 0:
        proc.kill()
        pytest.fail("dummy JACK server did not start")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Probe:
    """Two JACK clients: one sends MIDI into the daemon, the other records its two outputs.

    Two, so that JACK runs them in a chain (sender, daemon, recorder) every period: one client
    both feeding and hearing the daemon closes a loop, and JACK may then run it alongside the
    daemon, reading the outputs while they are written."""

    def __init__(self, server: str, daemon_name: str = "waeserver", seconds: int = 120):
        tag = uuid.uuid4().hex[:6]
        self.sender = jack.Client(f"probe-midi-{tag}", no_start_server=True, servername=server)
        self.client = jack.Client(f"probe-{tag}", no_start_server=True, servername=server)
        self.ins = [self.client.inports.register(f"in_{i}") for i in (1, 2)]
        self.midi_out = self.sender.midi_outports.register("midi_out")
        self.rec = np.zeros((2, seconds * RATE), np.float32)
        self.n = 0
        self.outgoing: deque[tuple[int, bytes]] = deque()
        self.sent: list[int] = []          # recording frame of every MIDI event sent
        self.sender.set_process_callback(self._send)
        self.client.set_process_callback(self._record)
        self.sender.activate()
        self.client.activate()
        for port, name in zip(self.ins, ("out_1", "out_2")):
            self.client.connect(f"{daemon_name}:{name}", port)
        self.sender.connect(self.midi_out, f"{daemon_name}:midi_in")

    def _send(self, frames):
        self.midi_out.clear_buffer()
        while self.outgoing:
            offset, data = self.outgoing.popleft()
            self.midi_out.write_midi_event(offset, data)
            self.sent.append(self.n + offset)   # recorded later in this same period

    def _record(self, frames):
        if self.n + frames <= self.rec.shape[1]:
            for i, port in enumerate(self.ins):
                self.rec[i, self.n:self.n + frames] = port.get_array()
            self.n += frames

    def midi(self, *data: int, offset: int = 0) -> None:
        self.outgoing.append((offset, bytes(data)))
        wait_for(lambda: not self.outgoing)

    def since(self, mark: int) -> np.ndarray:
        return self.rec[:, mark:self.n]

    def close(self):
        for client in (self.sender, self.client):
            client.deactivate()
            client.close()


class Osc:
    """A UDP OSC client that collects every message the daemon sends back."""

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = port

    def send(self, address: str, *args) -> None:
        self.sock.sendto(encode(address, list(args)), ("127.0.0.1", self.port))

    def expect(self, address: str, timeout: float = 20.0, first=None) -> list:
        """The arguments of the next ``address`` message (whose first argument is ``first``, if given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = OscMessage(self.sock.recv(65536))
            except TimeoutError:
                continue
            if msg.address == address and (first is None or msg.params[:1] == [first]):
                return msg.params
        raise AssertionError(f"no {address} within {timeout} s")

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    corrupt = make_test_bundle(root / "corrupt")
    (corrupt / "card.yaml").write_text("format: waeserver-bundle\nname: [unclosed\n")
    return {"first": make_test_bundle(root / "live-test"),
            "second": make_test_bundle(root / "second", styles=("oboe", "horn"), seed=3), "corrupt": corrupt}


@contextlib.contextmanager
def running(model: Path, presets: Path, realtime: bool = False):
    """A JACK server and a daemon on it; yields (daemon, probe, osc)."""
    name = f"waetest-{uuid.uuid4().hex[:8]}"
    jackd = start_jackd(name, realtime)
    cfg = validate({"model": str(model), "device": "cpu", "jack_server": name, "osc_port": free_port(),
                    "preset_dir": str(presets), "jack_connect": False, "release": 0.1})
    daemon = Daemon(cfg)
    try:
        daemon.start()
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        probe = Probe(name)
        osc = Osc(cfg.osc_port)
        yield daemon, probe, osc
        osc.close()
        probe.close()
    finally:
        daemon.close()
        stop(jackd)


@pytest.fixture(scope="module")
def live(models, tmp_path_factory):
    """One JACK server and one daemon for the module; yields (daemon, probe, osc)."""
    with running(models["first"], tmp_path_factory.mktemp("presets")) as live:
        yield live


def pool_state(daemon) -> str:
    """The voice pool's counters and sounding voices, for a failure's message."""
    pool = daemon.inst.pool
    counters = {name: getattr(pool.stats, name) for name, _ in pool.stats._fields_[:11]}
    voices = [(v.state, v.pitch, (v.slot.a, v.slot.b), round(v.pos), round(v.level, 3)) for v in pool.voices if v.state]
    return f"pool {counters}, JACK thread {pool.jack_thread()}, voices {voices}"


def quiet(live) -> None:
    """Silence every voice and wait until none sounds."""
    daemon, _, _ = live
    daemon.inst.pool.panic()
    wait_for(lambda: daemon.inst.pool.sounding() == 0)


def test_osc_note_sounds_on_both_outputs_then_silence(live):
    daemon, probe, osc = live
    quiet(live)
    assert daemon.inst.pool.jack_thread() in ("realtime", "nice -10, short slice", "nice -10", "ordinary")  # C runs
    mark = probe.n
    osc.send("/wae/note", 60, 100, 0.2)
    time.sleep(0.2 + 0.1 + 0.35)                  # duration, release, margin
    audio = probe.since(mark)
    loud = np.flatnonzero(np.abs(audio[0]) > 1e-4)
    assert len(loud) > 0.1 * RATE
    differ = np.flatnonzero(audio[0] != audio[1])
    assert np.array_equal(audio[0], audio[1]), \
        f"{len(differ)} frames differ, from {differ[:1]}: {audio[:, differ[:4]]}; {pool_state(daemon)}"
    assert not audio[:, loud[-1] + int(0.05 * RATE):].any()   # nothing after the release
    assert len(audio[0]) - loud[-1] > 0.1 * RATE


def test_jack_midi_note_is_sample_accurate(live):
    daemon, probe, _ = live
    quiet(live)
    probe.midi(0x90, 64, 127, offset=101)
    sent = probe.sent[-1]
    time.sleep(0.1)
    probe.midi(0x80, 64, 0)
    time.sleep(0.3)
    audio = probe.since(sent - 2 * PERIOD)[0]
    assert audio.any(), f"no sound: probe at frame {probe.n}, note sent at {sent}; {pool_state(daemon)}"
    first = np.flatnonzero(audio)[0] - 2 * PERIOD
    assert first == 0                             # on the very frame (JACK's graph: sender, daemon, recorder)
    assert np.abs(audio[2 * PERIOD + first:]).max() > 1e-4
    assert not audio[-int(0.1 * RATE):].any()


def test_pitch_and_pitch_bend_on_a_sounding_voice(live):
    daemon, probe, _ = live
    quiet(live)
    probe.midi(0x90, 57, 100)
    time.sleep(0.3)
    plain = probe.since(probe.n - int(0.2 * RATE))[0]
    probe.midi(0xE0, 0x7F, 0x7F)                 # full bend up: +2 semitones by default
    time.sleep(0.3)
    bent = probe.since(probe.n - int(0.2 * RATE))[0]
    probe.midi(0xE0, 0x00, 0x40)
    probe.midi(0x80, 57, 0)
    assert estimate_pitch(plain, RATE).midi == pytest.approx(57, abs=0.3)
    assert estimate_pitch(bent, RATE).midi == pytest.approx(57 + 2 * 8191 / 8192, abs=0.3)


def test_sustain_pedal_over_jack_midi(live):
    daemon, probe, _ = live
    quiet(live)
    probe.midi(0xB0, 64, 127)
    probe.midi(0x90, 60, 100)
    probe.midi(0x80, 60, 0)
    time.sleep(0.4)                               # well past the 0.1 s release
    mark = probe.n
    time.sleep(0.1)
    assert np.abs(probe.since(mark)).max() > 1e-4
    probe.midi(0xB0, 64, 0)
    time.sleep(0.3)
    mark = probe.n
    time.sleep(0.1)
    assert not probe.since(mark).any()


def test_garbage_midi_is_dropped_and_play_goes_on(live):
    daemon, probe, _ = live
    quiet(live)
    dropped = daemon.inst.pool.dropped
    for data in ([0x45, 0x10], [0x90, 0xFF, 0xFF], [0x90], [0xF0, 1, 2, 0xF7], [0xE0, 0x80, 0x80]):
        probe.midi(*data)
    wait_for(lambda: daemon.inst.pool.dropped >= dropped + 5)
    mark = probe.n
    probe.midi(0x90, 62, 100)
    time.sleep(0.15)
    probe.midi(0x80, 62, 0)
    assert np.abs(probe.since(mark)).max() > 1e-4


def test_notifications_status_and_sync(live):
    daemon, probe, osc = live
    quiet(live)
    osc.send("/wae/notify", 1)
    assert osc.expect("/done", first="/wae/notify") == ["/wae/notify"]
    osc.send("/wae/note", 67, 90, 0.05)
    assert osc.expect("/wae/n_go") == [67]
    assert osc.expect("/wae/n_end") == [67]
    osc.send("/wae/gain", 0.9)
    assert osc.expect("/wae/state") == ["gain", pytest.approx(0.9)]
    osc.send("/wae/sync", 1234)
    assert osc.expect("/wae/synced") == [1234]
    osc.send("/wae/status")
    status = osc.expect("/wae/status.reply")
    assert len(status) == 13 and status[8] == "cpu" and status[9] == "live-test" and status[12] >= 0
    assert 0.0 < status[11] < 1000.0              # the audio callback is timed: the slowest recent one
    assert status[6] + status[7] >= 1             # cache hits + misses count the notes
    assert status[5] >= 1000.0 * PERIOD / RATE    # note latency is at least one period
    osc.send("/wae/version")
    assert osc.expect("/wae/version.reply") == ["waeserver", __version__]
    osc.send("/wae/gain", 1.0)
    osc.send("/wae/notify", 0)


def test_stealing_keeps_the_pool_at_its_size(live):
    daemon, probe, osc = live
    quiet(live)
    most = []
    for i in range(48):
        osc.send("/wae/noteon", 40 + i, 100)
        if i % 8 == 7:
            time.sleep(0.02)
            most.append(sum(v.state in (PENDING, PLAYING, RELEASED) for v in daemon.inst.pool.voices))
    time.sleep(0.1)
    most.append(sum(v.state in (PENDING, PLAYING, RELEASED) for v in daemon.inst.pool.voices))
    assert max(most) <= 32 and most[-1] == 32
    osc.send("/wae/panic")
    wait_for(lambda: daemon.inst.pool.sounding() == 0)


def test_fader_flood_neither_stalls_notes_nor_piles_up(live):
    daemon, probe, osc = live
    quiet(live)
    mark = probe.n
    for i in range(2000):                         # a continuous morph, much faster than 100/s
        osc.send("/wae/style", "flute", (i % 100) / 100.0)
        if i == 1000:                             # a note in the middle of it, behind 1000 moves
            osc.send("/wae/note", 72, 100, 0.2)
    osc.send("/wae/style", "flute", 0.5)
    osc.send("/wae/sync", 9)
    assert osc.expect("/wae/synced") == [9]
    time.sleep(0.1)
    assert np.abs(probe.since(mark)).max() > 1e-4
    assert daemon.inst.state.styles[1] == 0.5
    cache = daemon.inst.cache
    wait_for(lambda: cache.n_fresh() == cache.high - cache.low + 1, timeout=30)   # refilled for the last state
    assert not cache.has_requests()


def test_per_note_z_draws_fresh_notes(live):
    daemon, probe, osc = live
    quiet(live)
    osc.send("/wae/z/mode", "per-note")
    osc.send("/wae/sync", 1)
    osc.expect("/wae/synced")
    cache = daemon.inst.cache
    wait_for(lambda: cache.n_fresh() == cache.high - cache.low + 1, timeout=30)
    first = cache.notes[60][0].wave
    mark = probe.n
    osc.send("/wae/note", 60, 100, 0.1)
    wait_for(lambda: cache.notes[60][0].wave is not first)   # used up, drawn again
    osc.send("/wae/note", 60, 100, 0.1)
    time.sleep(0.3)
    assert np.abs(probe.since(mark)).max() > 1e-4
    osc.send("/wae/z/mode", "fixed")


def longest_silence(audio: np.ndarray) -> int:
    silent = np.concatenate([[0], (audio == 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(silent))
    return int((edges[1::2] - edges[0::2]).max()) if len(edges) else 0


def test_model_load_refuses_corrupt_and_swaps_without_a_gap(live, models):
    daemon, probe, osc = live
    quiet(live)
    osc.send("/wae/model/load", str(models["corrupt"]))
    address, message = osc.expect("/fail")
    assert address == "/wae/model/load" and "card" in message
    assert daemon.inst.bundle.name == "live-test"
    osc.send("/wae/notify", 1)
    osc.expect("/done", first="/wae/notify")
    mark = probe.n
    osc.send("/wae/model/load", str(models["second"]))
    done = []
    deadline = time.monotonic() + 30
    while not done:                               # overlapping notes all through the load and swap
        assert time.monotonic() < deadline
        osc.send("/wae/note", 60, 100, 0.3)
        time.sleep(0.15)
        if daemon.inst.bundle.name == "second":
            done.append(probe.n)
    osc.send("/wae/note", 60, 100, 0.3)
    assert osc.expect("/done", first="/wae/model/load") == ["/wae/model/load"]
    time.sleep(0.3)
    audio = probe.since(mark)[0]
    first = np.flatnonzero(audio)[0]
    assert longest_silence(audio[first:done[0] - mark + int(0.15 * RATE)]) < 0.02 * RATE
    osc.send("/wae/model/info")
    assert osc.expect("/wae/model/info.reply")[:1] == ["second"]
    osc.send("/wae/notify", 0)


def refilled_and_hit(daemon, osc, value: float) -> None:
    """A style change, the whole cache refilled for it, then a note that finds its fresh render."""
    cache = daemon.inst.cache
    osc.send("/wae/style", daemon.inst.state.style_names[-1], value)
    osc.send("/wae/sync", 7)
    osc.expect("/wae/synced")                     # the style is applied (the cache stale) before this
    wait_for(lambda: cache.n_fresh() == cache.high - cache.low + 1, timeout=30)
    pool = daemon.inst.pool
    hits, standins = pool.hits, pool.standins
    osc.send("/wae/note", 60, 100, 0.05)
    assert osc.expect("/wae/n_go") == [60]
    assert (pool.hits, pool.standins) == (hits + 1, standins)


def test_a_killed_render_process_is_replaced_and_one_that_dies_again_is_not(live, caplog):
    """``kill -9`` of the daemon's render process, as the OOM killer would: within a second the
    daemon logs it and tells subscribers (``/wae/state render restarting``), renders in its own
    process meanwhile, starts a new process and says so (``render process``); after a style change
    the whole cache is rendered again, by the new process, and a note finds its fresh render.
    Killed again at once, the new one is not replaced (``render in-process``): the daemon renders
    in its own process, and fresh renders still come."""
    daemon, probe, osc = live
    quiet(live)
    renderer = daemon.inst.renderer
    osc.send("/wae/notify", 1)
    osc.expect("/done", first="/wae/notify")
    first = renderer.worker.pid
    assert first in children(os.getpid())
    os.kill(first, signal.SIGKILL)
    assert osc.expect("/wae/state", first="render", timeout=1.0) == ["render", "restarting"]
    assert any(r.levelname == "WARNING" and f"pid {first}" in r.message and "SIGKILL" in r.message
               for r in caplog.records)
    assert osc.expect("/wae/state", first="render", timeout=30) == ["render", "process"]
    second = renderer.worker
    assert second.pid != first and second.alive() and first not in children(os.getpid())   # no zombie left
    refilled_and_hit(daemon, osc, 0.3)
    assert renderer.worker is second              # the refill went through the new process

    os.kill(second.pid, signal.SIGKILL)
    assert osc.expect("/wae/state", first="render", timeout=1.0) == ["render", "in-process"]
    assert any(r.levelname == "ERROR" and "not starting another" in r.message for r in caplog.records)
    time.sleep(2.0)                               # long enough for a new process to show up, were one started
    assert renderer.worker is None and renderer.render_mode == "in-process"
    others = {renderer.priority_worker.pid} if renderer.priority_worker is not None else set()
    assert not [k for k in children(os.getpid()) if k not in others
                and b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
    refilled_and_hit(daemon, osc, 0.6)
    osc.send("/wae/notify", 0)


def test_notes_that_wait_have_a_render_process_of_their_own(live, caplog):
    """A note-on that finds its render stale (right after a style change) is rendered by the
    priority renders' own process, not behind the refill batch in progress. Killed (``kill -9``),
    that process is not replaced and leaves no zombie: the refill thread serves the requests from
    then on, and a note after the next style change still finds its fresh render."""
    daemon, probe, osc = live
    quiet(live)
    renderer, cache = daemon.inst.renderer, daemon.inst.cache
    osc.send("/wae/notify", 1)
    osc.expect("/done", first="/wae/notify")
    priority = renderer.priority_worker
    assert priority is not None and priority.alive() and priority.pid != getattr(renderer.worker, "pid", None)
    before, pitch = priority.renders, cache.high - 1   # a pitch the refill comes to last
    osc.send("/wae/style", daemon.inst.state.style_names[0], 0.7)
    osc.send("/wae/note", pitch, 100, 0.05)
    assert osc.expect("/wae/n_go") == [pitch]
    wait_for(lambda: priority.renders > before)
    os.kill(priority.pid, signal.SIGKILL)
    wait_for(lambda: renderer.priority_worker is None, timeout=2)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(level == "WARNING" and f"pid {priority.pid}" in message and "SIGKILL" in message
               for level, message in said), said
    assert priority.pid not in children(os.getpid())
    wait_for(lambda: cache.n_fresh() == cache.high - cache.low + 1, timeout=30)
    renderer.render_ms.clear()   # the priority renders' times (a bounded deque): only the next one's
    osc.send("/wae/style", daemon.inst.state.style_names[0], 0.2)
    osc.send("/wae/note", pitch - 2, 100, 0.05)  # not played before: the refill, most recent first, comes to it last
    assert osc.expect("/wae/n_go") == [pitch - 2]
    wait_for(lambda: len(renderer.render_ms) > 0)   # the request, rendered by the refill thread
    refilled_and_hit(daemon, osc, 0.8)
    osc.send("/wae/notify", 0)


def test_missing_model_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "waeserver", "serve", "--model", str(tmp_path / "gm-none")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"waeserver: error: no model bundle at {tmp_path / 'gm-none'}"]


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except FileNotFoundError:   # a thread that ended meanwhile
            pass
    return kids


def test_serve_starts_jackd_survives_its_loss_and_stops_on_sigterm(models, tmp_path):
    """A daemon process: no JACK server runs, so it starts one and says so. That server dies; the
    daemon says so, refuses notes meanwhile, starts it again and plays on with its controls intact.
    SIGTERM then stops it cleanly. (A process of its own: one process cannot hold JACK clients of two servers.)"""
    name = f"waetest-{uuid.uuid4().hex[:8]}"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "waeserver", "serve", "--model", str(models["first"]),
                             "--device", "cpu", "--jack-server", name, "--osc-port", str(port),
                             "--preset-dir", str(tmp_path), "--no-jack-connect"],
                            env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    logged = lambda text: any(text in line for line in lines)  # noqa: E731
    osc = Osc(port)
    try:
        wait_for(lambda: logged("ready") or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, "".join(lines)
        for what in ("no JACK server was running: started jackd", "model live-test", "48000 Hz, 256-frame periods",
                     "note latency"):
            assert logged(what), what
        osc.send("/wae/style", "violin", 0.75)
        osc.send("/wae/notify", 1)
        jackd = [k for k in children(proc.pid) if Path(f"/proc/{k}/cmdline").read_bytes().startswith(b"jackd")]
        assert len(jackd) == 1
        os.kill(jackd[0], signal.SIGKILL)
        wait_for(lambda: logged("JACK server went away"))
        osc.send("/wae/note", 64, 100, 0.05)          # refused, rather than sounding once JACK is back
        assert "JACK server went away" in osc.expect("/fail", first="/wae/note")[1]
        wait_for(lambda: logged("JACK is back"))       # it started its own server again
        osc.send("/wae/note", 60, 100, 0.05)
        assert osc.expect("/wae/n_go") == [60]        # the audio callback runs again; no 64 before it
        wait_for(lambda: logged("1 voice action not taken (the last: no audio"))
        osc.send("/wae/preset/save", "after")
        osc.expect("/done", first="/wae/preset/save")
        assert yaml.safe_load((tmp_path / "after.yaml").read_text())["styles"] == \
            {"piano": 1.0, "flute": 0.0, "violin": 0.75}
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, "".join(lines)
        logging.getLogger(__name__).info("SIGTERM to exit: %.2f s", time.monotonic() - t0)
        wait_for(lambda: logged("stopped"))
    finally:
        osc.close()
        if proc.poll() is None:      # the daemon failed: take its jackd down with it
            for kid in children(proc.pid):
                os.kill(kid, signal.SIGKILL)
            proc.kill()
            proc.wait()
