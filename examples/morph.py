"""Morph the daemon's style faders over time: an LFO around a ring of styles, or a timeline.

    python examples/morph.py lfo piano oboe --period 8 --duration 60
    python examples/morph.py timeline 0:piano 8:oboe 16:violin 24:piano --note 60

Every `1 / --rate` seconds it sends `/wae/mix name weight ...` (the styles not named go to 0).
`--note PITCH` also plays that note every `--every` seconds so the morph can be heard without
a keyboard.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time

from pythonosc.udp_client import SimpleUDPClient


def lfo_weights(styles: list[str], t: float, period: float) -> dict[str, float]:
    """Weights at time `t` of an LFO that visits every style once per `period` seconds.

    Between two neighbouring styles of the ring the crossfade is a raised cosine, so the sum of
    the weights is always 1 and each style rests on 1 when the LFO passes it.
    """
    position = (t / period * len(styles)) % len(styles)
    index = int(position)
    fade = 0.5 - 0.5 * math.cos(math.pi * (position - index))
    weights = dict.fromkeys(styles, 0.0)
    weights[styles[index]] += 1.0 - fade
    weights[styles[(index + 1) % len(styles)]] += fade
    return weights


def timeline_weights(keyframes: list[tuple[float, str]], t: float) -> dict[str, float]:
    """Weights at time `t` along `keyframes` [(seconds, style), ...], linear between keyframes.

    Before the first keyframe the first style holds, after the last the last one does.
    """
    weights = dict.fromkeys((style for _, style in keyframes), 0.0)
    if t <= keyframes[0][0]:
        weights[keyframes[0][1]] = 1.0
        return weights
    for (t0, a), (t1, b) in zip(keyframes, keyframes[1:]):
        if t < t1:
            fade = (t - t0) / (t1 - t0)
            weights[a] += 1.0 - fade
            weights[b] += fade
            return weights
    weights[keyframes[-1][1]] = 1.0
    return weights


def mix_arguments(weights: dict[str, float]) -> list:
    """The arguments of `/wae/mix`: name, weight, name, weight, ..."""
    args: list = []
    for name, weight in weights.items():
        args += [name, float(weight)]
    return args


def parse_keyframe(text: str) -> tuple[float, str]:
    """'8:oboe' -> (8.0, 'oboe')."""
    seconds, sep, style = text.partition(":")
    try:
        value = float(seconds)
    except ValueError:
        value = math.nan
    if not sep or not style or not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"keyframe {text!r} is not SECONDS:STYLE")
    return value, style


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default="127.0.0.1")
    common.add_argument("--port", type=int, default=57130)
    common.add_argument("--rate", type=float, default=20.0, help="mix messages per second")
    common.add_argument("--duration", type=float, help="seconds to run (default: the timeline's length, or forever)")
    common.add_argument("--note", type=int, help="also play this MIDI pitch every --every seconds")
    common.add_argument("--every", type=float, default=1.0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    lfo = modes.add_parser("lfo", parents=[common], help="cycle around a ring of styles")
    lfo.add_argument("styles", nargs="+")
    lfo.add_argument("--period", type=float, default=8.0, help="seconds for one trip around the ring")
    timeline = modes.add_parser("timeline", parents=[common], help="move between styles at given times")
    timeline.add_argument("keyframes", nargs="+", type=parse_keyframe, metavar="SECONDS:STYLE")
    args = parser.parse_args(argv)

    if args.rate <= 0 or args.every <= 0 or (args.duration is not None and args.duration < 0):
        parser.error("--rate and --every must be positive, --duration not negative")
    if args.mode == "lfo":
        if args.period <= 0:
            parser.error("--period must be positive")
        weights_at = functools.partial(lfo_weights, args.styles, period=args.period)
        duration = args.duration if args.duration is not None else math.inf
    else:
        times = [t for t, _ in args.keyframes]
        if any(b <= a for a, b in zip(times, times[1:])):
            parser.error("keyframe times must increase")
        weights_at = functools.partial(timeline_weights, args.keyframes)
        duration = args.duration if args.duration is not None else times[-1]

    client = SimpleUDPClient(args.host, args.port)
    start = time.monotonic()
    next_note = 0.0
    try:
        while True:
            t = time.monotonic() - start
            client.send_message("/wae/mix", mix_arguments(weights_at(min(t, duration))))
            if args.note is not None and t >= next_note:
                client.send_message("/wae/note", [args.note, 100, float(min(args.every, 4.0))])
                next_note += args.every
            if t >= duration:
                return 0
            time.sleep(1.0 / args.rate)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
