"""``waeserver build-model``: the whole pipeline from a dataset to a model bundle.

Stages, each recorded in ``WORK/stages.yaml`` when done, each resumable from its own checkpoints
when interrupted (run the same command again)::

    autoencoder   WAE-Fader through waeserver.train (or an already trained run: --ae-run)
    mcnn          the MCNN on the dataset's real audio (or an already trained one: --mcnn-run)
    finetune      the decoder through the frozen MCNN (waeserver.finetune)
    evaluate      the study's metrics (waeserver.evaluate) on the auto-encoder
    bundle        weights and card to --out, then the audio figures (inversion quality, pitch of
                  generated notes) measured on the bundle itself and written into its card
                  (speed belongs to a machine: ``waeserver bench``)

``WORK`` defaults to ``runs/build-NAME``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

STAGES = ("autoencoder", "mcnn", "finetune", "evaluate", "bundle")
REPO = Path(__file__).resolve().parent.parent


class BuildError(ValueError):
    """A build that cannot go on, with the reason."""


class Stages:
    """``WORK/stages.yaml``: which stages are done and what they produced."""

    def __init__(self, work: Path, data: Path):
        self.path = work / "stages.yaml"
        self.state = yaml.safe_load(self.path.read_text()) if self.path.is_file() else {}
        data_key = str(data.resolve())
        if self.state.get("data", data_key) != data_key:
            raise BuildError(f"{work} belongs to a build of {self.state['data']}; give another --work")
        self.state["data"] = data_key
        self.state.setdefault("done", {})

    def done(self, stage: str) -> dict | None:
        return self.state["done"].get(stage)

    def mark(self, stage: str, result: dict) -> None:
        self.state["done"][stage] = result
        self.path.write_text(yaml.safe_dump(self.state, sort_keys=False))
        log.info("build: stage %s done", stage)


def _repo_relative(path: Path) -> str:
    path = path.resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def dataset_card(ds) -> dict:
    """Card entries that describe the training data: attribute sets, pitch ranges, provenance."""
    pitches = [r["pitch"] for r in ds.rows]
    ranges = {}
    for style in ds.styles:
        own = [r["pitch"] for r in ds.rows if r["style"] == style]
        ranges[style] = [min(own), max(own)]
    counts = Counter(r["split"] for r in ds.rows)
    return {
        "attributes": {
            "pitch_classes": ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"],
            "octaves": sorted({r["octave"] for r in ds.rows}),
            "dynamics": sorted({r["dynamics"] for r in ds.rows}, key=lambda d: ["pp", "p", "mp", "mf", "f", "ff"].index(d)
                               if d in ("pp", "p", "mp", "mf", "f", "ff") else 99),
            "velocities": sorted({r["velocity"] for r in ds.rows}),
        },
        "pitch_range": [min(pitches), max(pitches)],
        "style_ranges": ranges,
        "training_data": {
            "path": _repo_relative(ds.root), "notes": len(ds), "split": dict(counts),
            "kind": ds.meta.get("kind"), "preset": ds.meta.get("preset"),
            "source": Path(str(ds.meta.get("soundfont") or ds.meta.get("source") or "")).name,
            "manifest_sha1": ds._digest(),
        },
    }


def _autoencoder_summary(report: dict) -> dict:
    """The headline figures of waeserver.evaluate's report for the one variant evaluated."""
    entry = next(iter(report["variants"].values()))
    gen = entry.get("generation", {})
    return {"judges_test_accuracy": report.get("classifiers_test_accuracy"),
            "reconstruction": entry.get("reconstruction"),
            "generation": gen,
            "latent_style_accuracy_from_z": entry.get("latent", {}).get("style_accuracy_from_z"),
            "chance": report.get("chance")}


def build_model(data: str | Path, out: str | Path, device: str = "auto", work: str | Path | None = None,
                ae_run: str | Path | None = None, mcnn_run: str | Path | None = None,
                mcnn_config: dict | None = None, finetune_config: dict | None = None,
                ae_config: dict | None = None, keep_encoder: bool = True, progress: bool = True) -> Path:
    """Run (or resume) every stage; returns the bundle folder."""
    from waeserver.bench import inversion_quality, pitch_accuracy
    from waeserver.bundle import load_bundle, pick_device, save_bundle
    from waeserver.dataset import NoteDataset
    from waeserver.evaluate import evaluate
    from waeserver.finetune import finetune_decoder
    from waeserver.mcnn import load_mcnn, train_mcnn
    from waeserver.train import load_wae, train

    data, out = Path(data), Path(out)
    ds = NoteDataset(data)
    work = Path(work) if work else REPO / "runs" / f"build-{out.name}"
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(work, data)
    dev = pick_device(device)
    started = time.monotonic()

    # 1. auto-encoder
    if not stages.done("autoencoder"):
        if ae_run:
            run = Path(ae_run)
        else:
            run = work / "autoencoder"
            if not (run / "model.safetensors").is_file():
                train(data, "wae-fader", run, ae_config, str(dev), resume=(run / "checkpoint.pt").is_file(),
                      progress=progress)
        _, meta = load_wae(run, "cpu")
        if list(meta.get("styles", [])) != ds.styles or meta.get("spectral") != ds.spectral.to_dict():
            raise BuildError(f"{run} was not trained on {data} (styles or spectral settings differ)")
        stages.mark("autoencoder", {"run": str(run), "training": meta.get("training", {})})
    ae = Path(stages.done("autoencoder")["run"])

    # 2. MCNN
    if not stages.done("mcnn"):
        if mcnn_run:
            mcnn_dir = Path(mcnn_run)
            if not (mcnn_dir / "mcnn.safetensors").is_file():
                raise BuildError(f"{mcnn_dir} holds no trained MCNN (mcnn.safetensors)")
            mcnn_metrics = yaml.safe_load((mcnn_dir / "metrics.yaml").read_text()) \
                if (mcnn_dir / "metrics.yaml").is_file() else {}
        else:
            mcnn_dir = work / "mcnn"
            mcnn_metrics = train_mcnn(data, mcnn_dir, mcnn_config, dev, resume=True, progress=progress)
        mcnn = load_mcnn(mcnn_dir)
        if mcnn.cfg.sample_rate != ds.sample_rate or mcnn.cfg.hop_length != ds.spectral.hop_length:
            raise BuildError(f"{mcnn_dir} was trained for another sample rate or hop than {data}")
        stages.mark("mcnn", {"run": str(mcnn_dir), "valid": mcnn_metrics})
    mcnn_dir = Path(stages.done("mcnn")["run"])

    # 3. fine-tuning
    wae, meta = load_wae(ae, dev)
    mcnn = load_mcnn(mcnn_dir, dev)
    ft_dir = work / "finetune"
    if not stages.done("finetune"):
        result = finetune_decoder(wae, mcnn, data, ft_dir, finetune_config, resume=True, progress=progress)
        stages.mark("finetune", result)
    from safetensors.torch import load_file
    wae.decoder.load_state_dict(load_file(str(ft_dir / "decoder.safetensors")))
    wae.eval()

    # 4. the study's evaluation of the auto-encoder
    if not stages.done("evaluate"):
        report = evaluate([ae], data, work / "evaluate", str(dev), progress=progress)
        stages.mark("evaluate", _autoencoder_summary(report))

    # 5. bundle, then its audio figures into the card
    info = dataset_card(ds)
    info["pitch_range"] = meta.get("pitch_range", info["pitch_range"])
    evaluation = {"autoencoder": stages.done("evaluate"), "mcnn_valid": stages.done("mcnn")["valid"],
                  "finetune": stages.done("finetune")}
    info["evaluation"] = evaluation
    info["training"] = {"autoencoder": _repo_relative(ae), "mcnn": _repo_relative(mcnn_dir),
                        "autoencoder_summary": stages.done("autoencoder")["training"]}
    encoder = wae.encoder if keep_encoder else None
    save_bundle(out, wae.decoder, mcnn, ds.spectral, ds.styles, name=out.name, encoder=encoder, info=info)
    bundle = load_bundle(out, dev)
    evaluation["audio"] = inversion_quality(bundle, data)
    evaluation["pitch"] = pitch_accuracy(bundle)
    save_bundle(out, wae.decoder, mcnn, ds.spectral, ds.styles, name=out.name, encoder=encoder, info=info)
    load_bundle(out, "cpu")
    stages.mark("bundle", {"out": str(out), "seconds": round(time.monotonic() - started, 1)})
    log.info("build: %s written (pitch within 50 cents: %.1f%%, MCNN SC %.3f)", out,
             100 * evaluation["pitch"].get("within_tolerance", 0), evaluation["audio"]["mcnn"]["sc"])
    return out


def _yaml_arg(path: Path | None, what: str) -> dict | None:
    if path is None:
        return None
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BuildError(f"{path}: unreadable {what} settings ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise BuildError(f"{path}: {what} settings must be a mapping")
    return data


def run_build(args: argparse.Namespace) -> int:
    """Handler of ``waeserver build-model``."""
    config = _yaml_arg(getattr(args, "config", None), "build") or {}
    unknown = set(config) - {"autoencoder", "mcnn", "finetune"}
    if unknown:
        raise BuildError(f"unknown build settings: {', '.join(sorted(unknown))} "
                         "(expected autoencoder, mcnn, finetune)")
    out = build_model(args.data, args.out, getattr(args, "device", "auto") or "auto",
                      work=getattr(args, "work", None), ae_run=getattr(args, "ae_run", None),
                      mcnn_run=getattr(args, "mcnn_run", None), mcnn_config=config.get("mcnn"),
                      finetune_config=config.get("finetune"), ae_config=config.get("autoencoder"),
                      keep_encoder=not getattr(args, "no_encoder", False))
    card = yaml.safe_load((out / "card.yaml").read_text())
    pitch = card["evaluation"]["pitch"]
    print(f"built {out}: {len(card['styles'])} styles, pitch within 50 cents for "
          f"{100 * pitch.get('within_tolerance', 0):.1f}% of generated notes, "
          f"MCNN SC {card['evaluation']['audio']['mcnn']['sc']}")
    return 0


__all__ = ["BuildError", "STAGES", "build_model", "run_build"]
