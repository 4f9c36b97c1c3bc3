"""Time tags to frames: the clock that maps the system clock to the voice pool's frames."""

from __future__ import annotations

import numpy as np

from waeserver.live.timing import FrameClock, encode_bundle, parse_bundle

RATE = 48000
PERIOD_NS = 256 / RATE * 1e9


class Anchors:
    """What the C pool publishes every period, for a clock whose frames run ``ppm`` fast, with
    ``jitter_ns`` on the DLL's times."""

    rate = RATE

    def __init__(self, ppm: float = 0.0, jitter_ns: float = 0.0, seed: int = 0):
        self.period, self.ppm, self.jitter, self.rng = 0, ppm, jitter_ns, np.random.default_rng(seed)
        self.lost = 0

    def anchor(self):
        ns = self.period * PERIOD_NS / (1 + self.ppm * 1e-6) + self.rng.normal(0.0, self.jitter) + self.lost
        return self.period * 256, int(ns), PERIOD_NS, 256


def test_jitter_averages_out_drift_is_followed_and_a_jump_re_anchors():
    pool = Anchors(jitter_ns=60_000)               # +-3 frames of DLL jitter
    clock = FrameClock(pool)
    spacing = []
    for note in range(48):                          # a note every 125 ms
        pool.period = int(note * 0.125 * RATE / 256) + 10
        spacing.append(clock.frame_at(int(10e9 + note * 0.125e9)))
    deviation = np.diff(spacing) - 6000
    assert np.abs(deviation).max() <= 1
    drifting = Anchors(ppm=100.0)                   # a card 100 ppm fast: 4.8 frames a second
    clock = FrameClock(drifting)
    for second in range(30):
        drifting.period = int(second * RATE * (1 + 100e-6) / 256)
        frame = clock.frame_at(int(second * 1e9))
    assert abs(frame - 29 * RATE * (1 + 100e-6)) <= 10          # followed, behind by drift x TAU_S at most
    drifting.lost = int(0.05e9)                     # 50 ms lost (an xrun): at once
    assert abs(clock.frame_at(int(29e9)) - (29 - 0.05) * RATE * (1 + 100e-6)) <= 10


def test_bundles_parse_and_nested_ones_are_refused():
    when, messages = parse_bundle(encode_bundle(1234.5, [("/wae/note", [60, 100]), ("/wae/gain", [0.5])]))
    assert abs(when - 1234.5) < 1e-6 and [m.address for m in messages] == ["/wae/note", "/wae/gain"]
    assert parse_bundle(encode_bundle(None, []))[0] is None
