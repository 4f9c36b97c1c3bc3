"""``waeserver render SONG.mid``: the live engine on a virtual clock, into a WAV file."""

from __future__ import annotations

import argparse
from pathlib import Path

from waeserver.cli.serve import add_config_flags, config_of

LIVE_ONLY = ("osc_host", "osc_port", "osc_allow", "jack_name", "jack_server", "jack_connect", "midi_inputs",
             "latency_budget_ms", "priority_process")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("song", type=Path, help="standard MIDI file")
    p.add_argument("--automation", type=Path, help="YAML timeline of (time, OSC address, arguments)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draws (default 0)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output WAV (stereo, 24-bit)")
    p.add_argument("--sample-rate", type=int, default=48000, help="output rate (default 48000)")
    add_config_flags(p, skip=LIVE_ONLY)


def run(args: argparse.Namespace) -> int:
    from waeserver.live.offline import render_file

    render_file(config_of(args), args.song, args.automation, args.out, args.sample_rate, args.seed)
    return 0
