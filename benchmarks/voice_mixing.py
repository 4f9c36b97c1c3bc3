"""Time one period of the C ``VoicePool`` (everything the JACK callback does but the port calls).

A pool of 32 voices at 48 kHz with 256-frame periods, mixing synthetic 1.5 s renders, in the
situations the live daemon meets: 32 voices sounding; a 32-note chord struck on one frame or on 32
different frames of a period (voices stolen from a pool already full); 32 voices under pitch bend;
a chord while every render is stale (stand-ins, then fresh renders crossfading in); 32 voices each
blending two velocity layers (three layers cached, a velocity between two); 32 voices loud enough
for the master limiter to turn them down all the time. Reports the median, p99 and maximum time of
a period in ms: compare them with the 5.33 ms period.

    python benchmarks/voice_mixing.py [--periods 2000] [--json out.json]
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

from live_latency import cpu_name  # noqa: E402

from waeserver.live.cache import Note, RenderCache  # noqa: E402
from waeserver.live.notes import shape_note  # noqa: E402
from waeserver.live.voices import VoicePool  # noqa: E402

RATE, PERIOD, VOICES = 48000, 256, 32
STYLES, Z = np.ones(2, np.float32), np.zeros(3, np.float32)


def note(rng) -> Note:
    """A sustained (so looping) 1.5 s render."""
    wave = 0.1 * rng.standard_normal(int(1.5 * RATE))
    return shape_note(wave.astype(np.float32), RATE)


def pool_with_cache(rng, velocities=(100,)) -> tuple[RenderCache, VoicePool]:
    cache = RenderCache((21, 108), velocities=velocities)
    cache.set_target(STYLES, Z, False)
    pitches = list(cache.pitches())
    cache.publish(pitches, [tuple(note(rng) for _ in velocities) for _ in pitches], (STYLES, Z))
    pool = VoicePool(RATE, cache, VOICES, 10.0)
    pool.sustain(True)
    return cache, pool


def chord(offsets, velocity: int = 100) -> list[tuple[int, str, tuple]]:
    return [(at, "note_on", (40 + i, 0.7, -1, velocity)) for i, at in enumerate(offsets)]


def time_periods(pool: VoicePool, events_at, periods: int) -> dict:
    out = np.zeros(PERIOD, np.float32)
    took = np.zeros(periods)
    for i in range(periods):
        cmds = pool.prepare(events_at(i))
        t0 = time.perf_counter()
        pool.process(out, cmds)
        took[i] = time.perf_counter() - t0
        pool.poll()     # the control thread's work, not the audio thread's
    ms = took * 1000.0
    return {"median_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--periods", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.periods
    same_frame, spread = chord([0] * VOICES), chord(range(0, PERIOD, PERIOD // VOICES))
    same_frame_blended = chord([0] * VOICES, velocity=100)   # between the 80 and 120 layers
    report = {"machine": f"{cpu_name()}, {os.cpu_count()} cores",
              "period_ms": round(1000.0 * PERIOD / RATE, 2), "cases": {}}
    cases = report["cases"]

    _, pool = pool_with_cache(rng)
    cases["32 voices sounding"] = time_periods(pool, lambda i: same_frame if i == 0 else [], n)
    _, pool = pool_with_cache(rng)
    cases["32-note chord on one frame, every 50 periods"] = time_periods(
        pool, lambda i: same_frame if i % 50 == 0 else [], n)
    _, pool = pool_with_cache(rng)
    cases["32-note chord on 32 frames, every 50 periods"] = time_periods(
        pool, lambda i: spread if i % 50 == 0 else [], n)
    _, pool = pool_with_cache(rng)
    pool.bend(3000)
    cases["32 voices under pitch bend"] = time_periods(pool, lambda i: same_frame if i == 0 else [], n)
    cache, pool = pool_with_cache(rng)

    def stale(i):
        target = np.full(2, 1.0 + 0.1 * (i // 50 + 1), np.float32)
        if i % 50 == 0:
            cache.set_target(target, Z, False)
            return spread
        if i % 50 == 3:   # the renderer publishes the chord's new renders: they crossfade in
            pitches = list(range(40, 40 + VOICES))
            cache.publish(pitches, [(note(rng),) for _ in pitches], (target, Z))
        return []
    cases["32-note chord, every render stale: stand-ins, then crossfades"] = time_periods(pool, stale, n)
    _, pool = pool_with_cache(rng, (40, 80, 120))
    cases["32 voices sounding, each blending two of three velocity layers"] = time_periods(
        pool, lambda i: same_frame_blended if i == 0 else [], n)
    _, pool = pool_with_cache(rng)
    pool.gain = 2.0
    cases["32 voices sounding, the limiter turning them down"] = time_periods(
        pool, lambda i: same_frame if i == 0 else [], n)
    report["limited_frames"] = int(pool.stats.limited)

    for name, figures in cases.items():
        print(f"{name}: median {figures['median_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms")
    print(f"limited frames in the last case: {report['limited_frames']} of {n * PERIOD}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
