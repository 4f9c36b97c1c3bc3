"""``waeserver build-model``: the whole pipeline, from a dataset to a checked bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from waeserver.cli.options import device_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="dataset folder to learn from")
    p.add_argument("--out", required=True, type=Path, help="bundle folder to write, e.g. models/NAME")
    device_arg(p)
    p.add_argument("--ae-run", type=Path, help="reuse this trained auto-encoder run")
    p.add_argument("--from-bundle", type=Path, help="take the auto-encoder from this bundle (and keep its "
                   "inverters beside the new one)")
    p.add_argument("--inverter-run", "--mcnn-run", type=Path, dest="inverter_run",
                   help="reuse this trained inverter (folder with inverter.safetensors or mcnn.safetensors)")
    p.add_argument("--work", type=Path, help="stages and checkpoints (default runs/build-NAME)")
    p.add_argument("--config", type=Path, help="YAML with autoencoder, inverter, finetune, evaluate sections")
    p.add_argument("--no-encoder", action="store_true", help="leave the encoder out of the bundle")


def run(args: argparse.Namespace) -> int:
    from waeserver.settings import read_yaml
    from waeserver.sound.pipeline import BuildError, build_model

    config = read_build_config(args.config)
    out = build_model(args.data, args.out, args.device, work=args.work, ae_run=args.ae_run,
                      inverter_run=args.inverter_run, inverter_config=config.get("inverter"),
                      finetune_config=config.get("finetune"), ae_config=config.get("autoencoder"),
                      evaluate_config=config.get("evaluate"),
                      keep_encoder=not args.no_encoder, from_bundle=args.from_bundle)
    card = read_yaml(out / "card.yaml", "bundle card", BuildError)
    pitch = card["evaluation"]["pitch"]
    name = card["inverter"]
    print(f"built {out}: {len(card['styles'])} styles, pitch within 50 cents for "
          f"{100 * pitch.get('within_tolerance', 0):.1f}% of generated notes, "
          f"{name} inverter SC {card['evaluation']['audio'][name]['sc']}")
    return 0


def read_build_config(path: Path | None) -> dict:
    """The ``--config`` file's sections (autoencoder, inverter, finetune, evaluate), or {}."""
    from waeserver.settings import read_mapping
    from waeserver.sound.pipeline import BuildError

    if path is None:
        return {}
    config = read_mapping(path, "build settings", BuildError)
    unknown = set(config) - {"autoencoder", "inverter", "finetune", "evaluate"}
    if unknown:
        raise BuildError(f"unknown build settings: {', '.join(sorted(unknown))} "
                         "(expected autoencoder, inverter, finetune, evaluate)")
    return config
