"""A priority render through its own render process, handed over in two parts: the waiting voice
starts on the note's first part and plays on into the rest, which grows the same array in place,
as if the whole note had been there from the start."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundles import make_test_bundle

from waeserver.live.cache import RenderCache
from waeserver.live.controls import ControlState
from waeserver.live.notes import head_length, layer_velocities
from waeserver.live.render_worker import RenderWorker
from waeserver.live.renderer import Renderer
from waeserver.live.voices import PLAYING, VoicePool
from waeserver.sound.bundle import load_bundle

RATE, PERIOD, PITCH = 48000, 256, 60


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    path = make_test_bundle(tmp_path_factory.mktemp("two-part") / "bundle")
    bundle = load_bundle(path, "cpu")
    velocities = layer_velocities(bundle)
    worker = RenderWorker(path, "cpu", RATE, velocities, background=False)
    yield bundle, velocities, worker
    worker.close()


def play(pool: VoicePool, seconds: float, between=None) -> np.ndarray:
    """``seconds`` of the pool's output, period by period; ``between(i)`` before period ``i``."""
    n = int(seconds * RATE) // PERIOD
    out = np.zeros(n * PERIOD, np.float32)
    for i in range(n):
        if between is not None:
            between(i)
        pool.run(out[i * PERIOD:(i + 1) * PERIOD])
    return out


def test_a_waiting_note_starts_on_the_first_part_and_plays_on_into_the_rest(setup):
    bundle, velocities, worker = setup
    state = ControlState(bundle.styles, bundle.latent_size)
    cache = RenderCache(bundle.pitch_range, 0.01, velocities)
    pool = VoicePool(RATE, cache, polyphony=4, budget_ms=1000.0)
    renderer = Renderer(bundle, state, cache, RATE, priority_worker=worker)
    renderer.retarget()
    renderer.fill()                              # every pitch whole, in this process: their levels known
    renderer.warm_up()                           # as the daemon: how long a priority render takes
    assert cache.expected_ms < 1000.0
    state.set_style(bundle.styles[1], 1.0)       # a style change: every render stale
    renderer.retarget()
    pool.note_on(PITCH, 0.5, -1, 100)
    play(pool, PERIOD / RATE)                    # the note waits for its render
    wanted = cache.pop_requests()
    assert wanted and PITCH in wanted

    # the rest arrives after the voice has played 50 ms of the first part
    heard: list[np.ndarray] = []
    grow = cache.extend

    def extend_later(*args):
        heard.append(play(pool, 0.05))
        assert pool.voices[0].state == PLAYING
        grow(*args)

    cache.extend = extend_later
    renderer.render_now(wanted, own_process=True)
    cache.extend = grow
    assert heard, "the render was not handed over in two parts"
    after = play(pool, 0.4)                      # well past the first part's 0.2 s
    assert pool.voices[0].state == PLAYING, "the voice ended with the first part"
    two_parts = np.concatenate(heard + [after])
    notes = cache.notes[PITCH]
    assert all(len(notes[i].wave) > head_length(RATE) for i in range(len(velocities)) if wanted[PITCH] >> i & 1)

    # the same note again, from the grown renders, which are now the fresh ones: the same sound
    pool.panic()
    play(pool, 0.05)
    assert cache.is_fresh(PITCH) or cache.fresh[PITCH] & wanted[PITCH] == wanted[PITCH]
    pool.note_on(PITCH, 0.5, -1, 100)
    whole = play(pool, len(two_parts) / RATE)
    start = lambda x: int(np.flatnonzero(np.abs(x) > 0)[0])  # noqa: E731
    a, b = two_parts[start(two_parts):], whole[start(whole):]
    n = min(len(a), len(b))
    peak = np.abs(b[:n]).max()
    assert peak > 1e-3
    assert np.abs(a[:n] - b[:n]).max() < 1e-3 * peak
