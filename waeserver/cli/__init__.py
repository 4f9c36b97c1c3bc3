"""waeserver, a neural instrument played live through JACK, MIDI and OSC (reference: docs/reference.md).

The command line:

One module per command in this package, each with ``add_arguments(parser)`` and ``run(args)``; they
import what they run only inside ``run``, so that ``--help`` stays quick. :data:`COMMANDS` is the
table of them. A command whose implementing module is not part of this build is absent. Every
failure ends in one line on stderr and a non-zero exit; ``-v`` adds the traceback. Only this
package uses ``argparse``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

log = logging.getLogger("waeserver")

# name: (help, the command's module here, the module that does the work)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "dataset": ("render, import and inspect note datasets", "dataset", "waeserver.data.dataset"),
    "train": ("train one auto-encoder", "train", "waeserver.model.training"),
    "build-model": ("whole pipeline: auto-encoder, real-time inverter, fine-tune, evaluation, bundle",
                    "build_model", "waeserver.sound.pipeline"),
    "evaluate": ("the study's metrics and figures, and REPORT/index.html: the study shown (tables, figures, "
                 "the latent space over training, sound sets)", "evaluate", "waeserver.model.evaluation"),
    "generate": ("one note to a WAV file", "generate", "waeserver.sound.generate"),
    "transform": ("the encoder as an audio effect: a recorded note encoded, decoded with another pitch, "
                  "velocity or style", "transform", "waeserver.sound.transform"),
    "bench": ("speed and latency figures of this machine", "bench", "waeserver.sound.bench"),
    "render": ("offline render of a MIDI file, with scripted control changes, through the same engine as serve",
               "render", "waeserver.live.offline"),
    "serve": ("the live daemon", "serve", "waeserver.live.daemon"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waeserver", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging; -v shows tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, module, needs) in COMMANDS.items():
        if importlib.util.find_spec(needs) is None:
            continue
        command = importlib.import_module(f"{__name__}.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        command.add_arguments(p)
        p.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("waeserver: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, never a bare traceback
        if args.verbose:
            log.exception("failed")
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, OSError, LookupError)):
            message = f"{type(exc).__name__}: {message}"
        print(f"waeserver: error: {message.splitlines()[0]}", file=sys.stderr)
        return 1
