"""Live sampling end to end: a JACK client of the test plays a note rendered with FluidSynth into the
daemon's ``in_1`` while ``/wae/sample/record`` runs, on a real dummy JACK server over real OSC;
``/wae/encode`` from a file; silence, noise, short takes and bad files refused, the point unchanged.
Then the same address table offline, where there is no input to record from."""

from __future__ import annotations

import re
import uuid

import jack
import numpy as np
import pytest
import soundfile as sf
import torch
from bundles import make_test_bundle
from scipy.signal import resample_poly
from test_daemon import RATE, running, wait_for
from test_render import Replies

from waeserver.cli import main
from waeserver.data.dataset import NoteDataset
from waeserver.data.user_samples import load_mono
from waeserver.live.config import validate
from waeserver.live.instrument import Instrument
from waeserver.live.osc import Commands
from waeserver.sound.bundle import load_bundle
from waeserver.sound.transform import encode, prepare_note

LEAD_S = 0.05   # silence the feeder plays before a sound: the take has begun by then


class Feeder:
    """A JACK client playing one sound at a time into ``waeserver:in_1`` (JACK runs it before the
    daemon, whose input it feeds)."""

    def __init__(self, server: str, daemon_name: str = "waeserver"):
        self.client = jack.Client(f"feeder-{uuid.uuid4().hex[:6]}", no_start_server=True, servername=server)
        self.out = self.client.outports.register("out")
        self.now = (np.zeros(0, np.float32), [0])    # (sound, [frames played]): replaced whole
        self.client.set_process_callback(self._play)
        self.client.activate()
        self.client.connect(self.out, f"{daemon_name}:in_1")

    def _play(self, frames):
        sound, played = self.now
        chunk = sound[played[0]:played[0] + frames]
        buf = self.out.get_array()
        buf[:len(chunk)] = chunk
        buf[len(chunk):] = 0.0
        played[0] += len(chunk)

    def play(self, sound: np.ndarray) -> None:
        self.now = (np.concatenate([np.zeros(int(LEAD_S * RATE)), sound]).astype(np.float32), [0])

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


@pytest.fixture(scope="module")
def note(tiny_dataset, tmp_path_factory):
    """A flute note of the tiny dataset at JACK's 48 kHz, and the same as a WAV file."""
    ds = NoteDataset(tiny_dataset)
    i = next(k for k, r in enumerate(ds.rows) if r["style"] == "flute" and r["pitch"] >= 72)
    sound = resample_poly(ds.audio(i), 160, 147).astype(np.float32)   # 22050 -> 48000 Hz
    path = tmp_path_factory.mktemp("takes") / "flute.wav"
    sf.write(path, sound, RATE, subtype="FLOAT")
    return sound, path


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    torch.set_num_threads(1)
    return make_test_bundle(tmp_path_factory.mktemp("models") / "sampling-test")


@pytest.fixture(scope="module")
def live(bundle_path, tmp_path_factory):
    """One daemon, its probe (recording out_1), a feeder of in_1 and an OSC client subscribed."""
    with running(bundle_path, tmp_path_factory.mktemp("presets")) as (daemon, probe, osc):
        replies = Replies(daemon.cfg.osc_port)
        replies.send("/wae/notify", 1)
        replies.expect("/done", first="/wae/notify")
        feeder = Feeder(daemon.cfg.jack_server)
        yield daemon, probe, replies, feeder
        feeder.close()
        replies.close()


def file_point(bundle, path) -> np.ndarray:
    """What ``encode`` makes of the note in ``path`` (the file's road: load_mono, prepare_note)."""
    return encode(bundle, prepare_note(load_mono(path, bundle.sample_rate), bundle.n_samples,
                                       bundle.sample_rate)).numpy()


def start_take(live, seconds: float, sound: np.ndarray | None = None) -> None:
    """``/wae/sample/record seconds``, and ``sound`` played into in_1 once the take has begun."""
    daemon, _, osc, feeder = live
    sampler, pool = daemon.inst.sampler, daemon.inst.pool
    osc.send("/wae/sample/record", seconds)
    if sound is not None:
        wait_for(lambda: sampler.armed and pool.take()[0] == sampler.armed, timeout=10)
        feeder.play(sound)


def record(live, seconds: float, sound: np.ndarray | None = None) -> tuple[str, list]:
    """:func:`start_take`, then its reply: ``(address, arguments)``."""
    start_take(live, seconds, sound)
    return live[2].expect_any(("/wae/sample.reply", "/fail"), timeout=seconds + 20)


def play_note(live, pitch: int = 76) -> np.ndarray:
    """out_1 of one note, from its first sound."""
    daemon, probe, osc, _ = live
    cache = daemon.inst.cache
    wait_for(lambda: cache.n_fresh() == cache.high - cache.low + 1, timeout=30)   # rendered for the state
    mark = probe.n
    osc.send("/wae/note", pitch, 100, 0.3)
    osc.expect("/wae/n_end", first=pitch)
    wait_for(lambda: probe.n > mark + int(0.5 * RATE))
    audio = probe.since(mark)[0]
    return audio[np.flatnonzero(audio)[0]:][:int(0.3 * RATE)]


def steady_note(live, pitch: int = 76) -> np.ndarray:
    """:func:`play_note`, played again while an xrun fell within it: on a loaded machine the probe's
    Python callback can miss a period (the GIL held elsewhere), and its recording then has a gap."""
    for _ in range(3):
        xruns = live[0].audio.xruns
        audio = play_note(live, pitch)
        if live[0].audio.xruns == xruns:
            break
    return audio


def test_a_note_played_into_in_1_sets_the_latent_point_and_the_notes_change(live, note, bundle_path):
    daemon, _, osc, _ = live
    sound, path = note
    bundle = load_bundle(bundle_path, "cpu")
    before_z, before = daemon.inst.state.z.copy(), steady_note(live)
    again = steady_note(live)
    differ = np.flatnonzero(again != before)
    assert not len(differ), f"the same controls, another note: {len(differ)} samples from {differ[:1]} differ"
    expected = file_point(bundle, path)
    for _ in range(3):   # an xrun can cost the take a period of the note (a loaded machine): then again
        xruns = daemon.audio.xruns
        address, point = record(live, 2.0, sound)
        assert address == "/wae/sample.reply", point
        if np.allclose(point, expected, atol=0.02) or daemon.audio.xruns == xruns:
            break
    assert len(point) == bundle.latent_size
    np.testing.assert_allclose(point, expected, atol=0.02)   # in_1's road, the file's road
    assert np.abs(np.array(point) - before_z).max() > 0.05
    np.testing.assert_allclose(daemon.inst.state.z, point)
    after = play_note(live)
    n = min(len(before), len(after))
    assert np.abs(before).max() > 1e-3 and np.abs(after).max() > 1e-3
    # another note: the random test bundle's decoder hears z faintly, but it hears it
    assert np.abs(after[:n] - before[:n]).max() > 1e-3 * np.abs(before).max()
    assert daemon.inst.sampler.latencies and daemon.inst.sampler.latencies[-1] < 5000.0


def test_the_point_set_is_announced_to_subscribers(live, note):
    daemon, _, osc, _ = live
    sound, _ = note
    osc.send("/wae/z", 0.0, 0.0, 0.0)
    assert osc.expect("/wae/state", first="z") == ["z", 0.0, 0.0, 0.0]
    start_take(live, 2.0, sound)
    state = osc.expect("/wae/state", first="z", timeout=22)
    reply = osc.expect("/wae/sample.reply", timeout=5)
    assert state[1:] == pytest.approx(reply) and reply == pytest.approx(daemon.inst.state.z.tolist())


def test_encode_a_file_gives_the_point_transform_uses(live, note, bundle_path, tmp_path, capsys):
    daemon, _, osc, _ = live
    _, path = note
    assert main(["transform", str(path), "--model", str(bundle_path), "--device", "cpu",
                 "-o", str(tmp_path / "out.wav")]) == 0
    printed = re.search(r"latent point ([-\d., ]+)\)", capsys.readouterr().out).group(1)
    transform_point = [float(v) for v in printed.split(",")]
    osc.send("/wae/encode", str(path))
    address, point = osc.expect_any(("/wae/encode.reply", "/fail"))
    assert address == "/wae/encode.reply", point
    assert point == pytest.approx(transform_point, abs=6e-4)   # transform prints three decimals
    np.testing.assert_allclose(daemon.inst.state.z, point)


@pytest.mark.parametrize("case, message", [
    ("silence", "silent"),
    ("noise", "no clear pitch"),
    ("out of range", "out of range 0.1..10"),
    ("too short", "the take is too short"),
])
def test_takes_without_a_note_fail_and_change_nothing(live, note, case, message):
    daemon = live[0]
    sound, _ = note
    before = daemon.inst.state.z.copy()
    if case == "silence":
        address, args = record(live, 1.0)
    elif case == "noise":
        address, args = record(live, 1.5, np.random.default_rng(0).normal(0, 0.3, int(1.5 * RATE)))
    elif case == "out of range":
        address, args = record(live, 0.05)
    else:
        address, args = record(live, 0.4, sound)   # a take stopped 0.35 s into a 1.49 s note
    assert address == "/fail" and args[0] == "/wae/sample/record" and message in args[1], args
    np.testing.assert_array_equal(daemon.inst.state.z, before)


def test_unreadable_and_missing_files_fail_and_change_nothing(live, tmp_path):
    daemon, _, osc, _ = live
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....not audio")
    before = daemon.inst.state.z.copy()
    for path, message in ((junk, "cannot read"), (tmp_path / "missing.wav", "no such file")):
        osc.send("/wae/encode", str(path))
        address, args = osc.expect_any(("/wae/encode.reply", "/fail"))
        assert address == "/fail" and args[0] == "/wae/encode" and message in args[1], args
    np.testing.assert_array_equal(daemon.inst.state.z, before)


# --- offline: the same table, no JACK ---------------------------------------------------------------

def test_offline_a_file_is_encoded_at_once_and_there_is_nothing_to_record(bundle_path, note, tmp_path):
    cfg = validate({"preset_dir": str(tmp_path / "presets"), "device": "cpu"})
    bundle = load_bundle(bundle_path, "cpu")
    commands = Commands(Instrument(bundle, cfg, 48000))
    [(address, point)] = commands.apply("/wae/encode", [str(note[1])])
    assert address == "/wae/encode.reply" and point == pytest.approx(file_point(bundle, note[1]).tolist(), abs=1e-6)
    [(address, args)] = commands.apply("/wae/sample/record", [1.0])
    assert address == "/fail" and "no audio input" in args[1]
    no_encoder = make_test_bundle(tmp_path / "no-encoder", encoder=False)
    commands = Commands(Instrument(load_bundle(no_encoder, "cpu"), cfg, 48000))
    [(address, args)] = commands.apply("/wae/encode", [str(note[1])])
    assert address == "/fail" and "carries no encoder" in args[1]
