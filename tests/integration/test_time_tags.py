"""Time-tagged bundles end to end: a realtime dummy JACK server, the daemon, and a probe JACK client
recording its outputs (a module of its own: one process cannot use two JACK servers at once, and
test_daemon.py keeps its own server up for the whole module)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from bundles import make_test_bundle
from test_daemon import RATE, pool_state, running

from waeserver.live.timing import encode_bundle


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    return make_test_bundle(tmp_path_factory.mktemp("models") / "timing-test")


def onsets(audio: np.ndarray, gap: int) -> np.ndarray:
    """Frames where sound starts after at least ``gap`` silent frames."""
    loud = np.flatnonzero(audio)
    return loud[np.diff(np.concatenate([[-gap - 1], loud])) > gap] if len(loud) else loud


def test_time_tagged_notes_land_on_their_frames(model, tmp_path):
    """24 bundles tagged 125 ms apart, each sent 0.2 s ahead (sclang's way), with timed control
    changes between them and one inside every fourth bundle before its note: every onset is within
    one frame of its tag's spacing, and the notes after a change are rendered for it. JACK runs
    realtime, as on stage: otherwise the dummy driver, woken late on a busy machine, loses time
    against the system clock that the tags are in, and frames stop being 1/48000 s apart. Even
    realtime, this shared VM's JACK loses time now and then (an xrun, or JACK's DLL putting the
    periods further apart than 256 frames of the system clock): the phrase is then played once
    more; a deviation while JACK kept time fails at once."""
    with running(model, tmp_path, realtime=True) as live:
        daemon = live[0]
        for _ in range(3):
            xruns, before = daemon.audio.xruns, daemon.inst.pool.anchor()
            deviation = tagged_notes(*live)
            after = daemon.inst.pool.anchor()
            lost = (after[0] - before[0]) - (after[1] - before[1]) * RATE / 1e9   # JACK's frames less the clock's
            if np.abs(deviation).max() <= 1.0:
                return
            assert daemon.audio.xruns > xruns or abs(lost) > 1.0, \
                f"deviations (frames) while JACK kept time ({lost:.1f}): {deviation.round(2).tolist()}"
        pytest.fail(f"JACK lost time in each of 3 phrases; the last's deviations: {deviation.round(2).tolist()}")


def tagged_notes(daemon, probe, osc) -> np.ndarray:
    """Play the phrase and check what it changed; the onsets' deviations from the tags' spacing."""
    pool = daemon.inst.pool
    budget = pool.budget_ms
    pool.budget_ms = 0.0           # never wait for a render: a stale note starts on its frame as a stand-in
    osc.send("/wae/release", 0.02)
    osc.send("/wae/sync", 7)
    osc.expect("/wae/synced", first=7)
    mark, misses = probe.n, pool.misses
    start = time.time() + 0.3
    tags = [start + 0.125 * i for i in range(24)]
    try:
        for i, tag in enumerate(tags):
            time.sleep(max(0.0, tag - 0.2 - time.time()))
            change = [("/wae/style", ["piano", 0.5 + 0.5 * (i // 4 % 2)])] if i % 4 == 3 else []
            osc.sock.sendto(encode_bundle(tag, change + [("/wae/note", [60 + i % 5, 100, 0.04])]),
                            ("127.0.0.1", osc.port))
            osc.sock.sendto(encode_bundle(tag + 0.0625, [("/wae/gain", [1.0 - 0.25 * (i % 2)]),
                                                         ("/wae/z", [0.1 * (i % 3), 0.0, 0.0])]),
                            ("127.0.0.1", osc.port))
        time.sleep(tags[-1] + 0.3 - time.time())
        state = daemon.inst.state
        assert state.gain == 0.75 and state.z[0] == pytest.approx(0.2) and state.styles[0] == 1.0   # the last ones
    finally:
        pool.budget_ms = budget
        osc.send("/wae/release", 0.1)
        osc.send("/wae/gain", 1.0)
    found = onsets(probe.since(mark)[0], gap=int(0.02 * RATE))
    assert len(found) == len(tags), f"{len(found)} onsets for {len(tags)} notes; {pool_state(daemon)}"
    expected = (np.array(tags) - tags[0]) * RATE
    assert pool.misses > misses                # changed controls made notes after them stale: rendered anew
    assert pool.stats.timed_late == 0 and daemon.commands.late == 0
    return (found - found[0]) - expected
