"""A slow random walk through the latent space while a pattern of notes plays.

    python examples/latent_walk.py --notes 48,55,60,63 --every 0.5 --duration 60

The walk is an Ornstein-Uhlenbeck process: it wanders with speed `--sigma` and is pulled back
towards the prior's centre with strength `--pull`, so it stays where the model was trained.
The latent size comes from the daemon's `/wae/model/info` reply unless `--latent` is given.
"""

from __future__ import annotations

import argparse
import math
import random
import socket
import sys
import time

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

LIMIT = 3.0  # |z| beyond three standard deviations of the prior is rarely meaningful


def encode(address: str, values: list) -> bytes:
    """One OSC message; python ints go as i, floats as f, strings as s."""
    builder = OscMessageBuilder(address)
    for value in values:
        builder.add_arg(value)
    return builder.build().dgram


def ask_latent_size(sock: socket.socket, daemon: tuple[str, int], timeout: float = 2.0) -> int:
    """Ask `/wae/model/info` and return the latent size from its reply."""
    sock.sendto(encode("/wae/model/info", []), daemon)
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            break
        reply = OscMessage(data)
        if reply.address == "/wae/model/info.reply":
            return int(reply.params[1])
    raise TimeoutError(f"no /wae/model/info.reply from {daemon[0]}:{daemon[1]} (is `waeserver serve` running?)")


def ou_step(z: list[float], dt: float, pull: float, sigma: float, rng: random.Random) -> list[float]:
    """One Euler step of dz = -pull * z dt + sigma dW, clipped to +-LIMIT."""
    noise = math.sqrt(dt) * sigma
    return [max(-LIMIT, min(LIMIT, x - pull * x * dt + noise * rng.gauss(0.0, 1.0))) for x in z]


def parse_pitches(text: str) -> list[int]:
    try:
        pitches = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of MIDI pitches") from None
    if not pitches or any(not 0 <= p <= 127 for p in pitches):
        raise argparse.ArgumentTypeError(f"{text!r}: pitches must be 0 to 127")
    return pitches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=57130)
    parser.add_argument("--latent", type=int, help="latent size (default: ask the daemon)")
    parser.add_argument("--notes", type=parse_pitches, default=[48, 55, 60, 63], help="pitches played in turn")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between notes")
    parser.add_argument("--rate", type=float, default=20.0, help="z updates per second")
    parser.add_argument("--sigma", type=float, default=0.5, help="speed of the walk, per sqrt(second)")
    parser.add_argument("--pull", type=float, default=0.1, help="pull towards the centre, per second")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    if min(args.every, args.rate) <= 0 or min(args.sigma, args.pull, args.duration) < 0:
        parser.error("--every and --rate must be positive; --sigma, --pull and --duration not negative")
    if args.latent is not None and args.latent < 1:
        parser.error("--latent must be at least 1")

    daemon = (args.host, args.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # one socket, so replies find us
    try:
        latent = args.latent or ask_latent_size(sock, daemon)
    except TimeoutError as exc:
        print(f"latent_walk: {exc}", file=sys.stderr)
        return 1

    rng = random.Random(args.seed)
    z = [0.0] * latent
    dt = 1.0 / args.rate
    start = time.monotonic()
    step = 0
    note = 0
    try:
        while (t := time.monotonic() - start) < args.duration:
            z = ou_step(z, dt, args.pull, args.sigma, rng)
            sock.sendto(encode("/wae/z", z), daemon)
            if t >= note * args.every:
                pitch = args.notes[note % len(args.notes)]
                sock.sendto(encode("/wae/note", [pitch, 90, float(args.every)]), daemon)
                note += 1
            step += 1
            time.sleep(max(0.0, start + step * dt - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        sock.sendto(encode("/wae/panic", []), daemon)
    return 0


if __name__ == "__main__":
    sys.exit(main())
