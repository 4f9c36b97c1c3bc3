"""``/wae/render`` over UDP with the real daemon on a dummy JACK server: one note with the current
controls to ``render_dir/NAME.wav``, the folder bounded, bad input refused while the audio plays
on; then Pd's ``soundfiler`` loading a render, with the real pd."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from bundles import make_test_bundle
from pythonosc.osc_message import OscMessage
from test_daemon import RATE, Osc, Probe, free_port, longest_silence, start_jackd, stop

from waeserver.dsp.pitch import estimate_pitch
from waeserver.live.config import validate
from waeserver.live.daemon import Daemon
from waeserver.live.note_files import render_note
from waeserver.sound.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[2]
MB = 1.0   # render_dir_mb: three notes of the test bundle (285 kB each) fit, a fourth does not


class Replies(Osc):
    def expect_any(self, addresses: tuple[str, ...], timeout: float = 20.0) -> tuple[str, list]:
        """The next message at one of ``addresses``: (address, arguments)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(socket.timeout):
                msg = OscMessage(self.sock.recv(65536))
                if msg.address in addresses:
                    return msg.address, msg.params
        raise AssertionError(f"none of {addresses} within {timeout} s")


@contextlib.contextmanager
def running_daemon(tmp_path_factory, **options):
    """A dummy JACK server and the daemon on it, JACK client ``waeserver``, playing a test bundle
    with presets and renders in folders of their own; yields (daemon, bundle path)."""
    torch.set_num_threads(1)
    bundle = make_test_bundle(tmp_path_factory.mktemp("models") / "render-test")
    name = f"waetest-{uuid.uuid4().hex[:8]}"
    jackd = start_jackd(name)
    cfg = validate({"model": str(bundle), "device": "cpu", "jack_server": name, "osc_port": free_port(),
                    "preset_dir": str(tmp_path_factory.mktemp("presets")), "jack_connect": False,
                    "render_dir": str(tmp_path_factory.mktemp("home") / "renders"), **options})
    daemon = Daemon(cfg)
    try:
        daemon.start()
        threading.Thread(target=daemon.run, daemon=True).start()
        yield daemon, bundle
    finally:
        daemon.close()
        stop(jackd)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One daemon with a 1 MB render folder; yields (daemon, probe, osc, bundle path)."""
    with running_daemon(tmp_path_factory, render_dir_mb=MB) as (daemon, bundle):
        probe = Probe(daemon.cfg.jack_server)
        osc = Replies(daemon.cfg.osc_port)
        yield daemon, probe, osc, bundle
        osc.close()
        probe.close()


def render(osc, name, *args) -> list:
    osc.send("/wae/render", name, *args)
    return osc.expect("/wae/render.reply", first=name)


def folder(daemon) -> Path:
    return Path(daemon.cfg.render_dir)


def test_render_writes_one_note_with_the_current_controls(live):
    daemon, _, osc, bundle_path = live
    osc.send("/wae/mix", "flute", 1.0)
    osc.send("/wae/z", 0.5, -1.0, 0.25)
    name, path, frames, rate = render(osc, "flute-60", 60, 90)
    assert name == "flute-60" and Path(path) == folder(daemon) / "flute-60.wav" and Path(path).is_absolute()
    wave, file_rate = sf.read(path, dtype="float32")
    assert (rate, file_rate, len(wave)) == (RATE, RATE, frames)    # JACK's rate, the daemon's output
    assert estimate_pitch(wave, rate).midi == pytest.approx(60, abs=0.3)
    # the very model call of the live voices, with the faders, z and velocity sent
    bundle = load_bundle(bundle_path, "cpu")
    expected = render_note(bundle, 60, 90, np.array([0, 1, 0], np.float32), np.array([0.5, -1, 0.25], np.float32),
                           RATE)
    np.testing.assert_allclose(wave, expected, atol=1e-5)
    osc.send("/wae/mix", "violin", 1.0)
    _, other, _, _ = render(osc, "violin-60", 60)               # velocity 100 by default
    expected = render_note(bundle, 60, 100, np.array([0, 0, 1], np.float32), np.array([0.5, -1, 0.25], np.float32),
                           RATE)
    np.testing.assert_allclose(sf.read(other, dtype="float32")[0], expected, atol=1e-5)
    assert render(osc, "flute-60", 60, 90)[1] == path           # the same name again: replaced


def test_the_folder_keeps_the_newest_renders_within_its_bound(live):
    daemon, _, osc, _ = live
    for i in range(6):
        render(osc, f"bound-{i}", 55 + i)
        time.sleep(0.01)                                          # distinct modification times
    files = sorted(p.name for p in folder(daemon).glob("*.wav"))
    assert files == ["bound-3.wav", "bound-4.wav", "bound-5.wav"]
    assert sum(p.stat().st_size for p in folder(daemon).iterdir()) <= MB * 1e6
    assert not list(folder(daemon).glob(".*"))                   # no temporary files left


def test_bad_renders_are_refused_and_change_nothing_while_a_note_plays(live):
    daemon, probe, osc, _ = live
    low, high = daemon.inst.cache.low, daemon.inst.cache.high
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder(daemon).glob("*.wav"))
    state = daemon.inst.state.snapshot()
    osc.send("/wae/noteon", 60, 100)                             # held through everything below
    time.sleep(0.2)
    mark = probe.n
    bad = [("../escape", 60), ("a/b", 60), ("..", 60), (".hidden", 60), ("", 60), ("x" * 65, 60),
           ("ok", high + 1), ("ok", low - 1), ("ok", 200), ("ok", 60.5), ("ok", 60, 0), ("ok", 60, 128),
           ("ok", "60"), (7, 60), ("ok",), ("ok", 60, 100, 1)]
    for args in bad:
        osc.send("/wae/render", *args)
        address, message = osc.expect("/fail")
        assert address == "/wae/render" and message, args
    real = folder(daemon)
    moved = real.with_name("renders-away")
    real.rename(moved)                                            # render_dir now a file: unwritable
    real.write_text("not a folder")
    try:
        osc.send("/wae/render", "ok", 60)
        address, message = osc.expect("/fail")
        assert address == "/wae/render" and "cannot use render_dir" in message
    finally:
        real.unlink()
        moved.rename(real)
    time.sleep(0.3)
    osc.send("/wae/noteoff", 60)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in real.glob("*.wav")) == before
    assert daemon.inst.state.snapshot() == state
    audio = probe.since(mark)[0]
    assert np.abs(audio).max() > 1e-4 and longest_silence(audio) < 0.01 * RATE   # it never stopped


def test_a_flood_of_renders_is_bounded_and_the_audio_plays_on(live):
    daemon, probe, osc, _ = live
    osc.send("/wae/noteon", 64, 100)
    time.sleep(0.2)
    mark = probe.n
    for i in range(30):
        osc.send("/wae/render", f"flood-{i}", 60)
    replies, refused = set(), 0
    deadline = time.monotonic() + 60
    while len(replies) + refused < 30:
        assert time.monotonic() < deadline
        msg = osc.expect_any(("/wae/render.reply", "/fail"))
        if msg[0] == "/fail":
            assert msg[1][0] == "/wae/render" and "already waiting" in msg[1][1]
            refused += 1
        else:
            replies.add(msg[1][0])
    osc.send("/wae/noteoff", 64)
    # eight wait, and a ninth when the first was already taken up before the queue filled
    assert refused > 0 and len(replies) >= 8
    assert "flood-0" in replies
    audio = probe.since(mark)[0]
    assert longest_silence(audio) < 0.01 * RATE
    newest = max(folder(daemon).glob("*.wav"), key=lambda p: p.stat().st_mtime_ns)
    assert newest.stem in replies


# --- Pd's soundfiler ---------------------------------------------------------------------------------

def test_pd_soundfiler_example_loads_a_render(live, tmp_path):
    """patches/pd/wae-render.pd asks for a render and loads the replied path into an array."""
    if shutil.which("pd") is None:
        pytest.fail("pd is not installed (make test installs puredata-core)")
    daemon, _, osc, _ = live
    osc.send("/wae/mix", "piano", 1.0)
    wrapper = tmp_path / "wrapper.pd"
    lines = ["#N canvas 0 0 400 300 12",
             "#X obj 10 10 wae-render",
             "#X obj 10 40 loadbang",
             f"#X msg 10 70 \\; wae-render-connect 127.0.0.1 {daemon.cfg.osc_port} \\; wae-render-note pd-note 67 110",
             "#X obj 10 100 r wae-render-loaded",
             "#X obj 10 130 t b f",          # print the count, then quit
             "#X obj 100 160 print loaded",
             "#X msg 10 190 \\; pd quit",
             "#X connect 1 0 2 0", "#X connect 3 0 4 0", "#X connect 4 1 5 0", "#X connect 4 0 6 0"]
    wrapper.write_text("".join(line + ";\n" for line in lines))
    proc = subprocess.run(["timeout", "30", "pd", "-nogui", "-nosound", "-nomidi", "-stderr",
                           "-path", str(ROOT / "patches" / "pd"), "-open", str(wrapper)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"pd exited {proc.returncode} (124: nothing loaded):\n{proc.stderr[-3000:]}"
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() or "couldn't create" in line]
    assert not errors, errors
    loaded = [line for line in proc.stderr.splitlines() if line.startswith("loaded:")]
    frames = sf.info(folder(daemon) / "pd-note.wav").frames
    assert loaded == [f"loaded: {frames}"], proc.stderr[-2000:]   # soundfiler's count: every frame
