"""``waeserver build-model``: the whole pipeline from a dataset to a model bundle.

Stages, each recorded in ``WORK/stages.yaml`` when done, each resumable from its own checkpoints
when interrupted (run the same command again)::

    autoencoder   WAE-Fader through waeserver.model.training (or an already trained run: --ae-run; or the
                  encoder and decoder of an existing bundle: --from-bundle)
    inverter      the real-time inverter on the dataset's real audio (waeserver.sound.inverter_training;
                  the harmonic one unless the config's ``inverter`` section says otherwise), or an
                  already trained one: --inverter-run
    finetune      the decoder through the frozen inverter (waeserver.sound.finetune)
    evaluate      the study's metrics (waeserver.model.evaluation) on the auto-encoder (with --from-bundle
                  the bundle's own figures are kept)
    bundle        weights and card to --out, then the audio figures (inversion quality, pitch of
                  generated notes) measured on the bundle itself and written into its card
                  (speed belongs to a machine: ``waeserver bench``)

With --from-bundle the new bundle also carries the old bundle's inverters under their names (a
version 1 bundle's MCNN as ``mcnn``), so the study can compare them. ``WORK`` defaults to
``runs/build-NAME``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

STAGES = ("autoencoder", "inverter", "finetune", "evaluate", "bundle")
REPO = Path(__file__).resolve().parents[2]


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
            "dynamics": sorted({r["dynamics"] for r in ds.rows},
                               key=lambda d: ["pp", "p", "mp", "mf", "f", "ff"].index(d)
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
    """The headline figures of waeserver.model.evaluation's report for the one variant evaluated."""
    entry = next(iter(report["variants"].values()))
    gen = entry.get("generation", {})
    return {"judges_test_accuracy": report.get("classifiers_test_accuracy"),
            "reconstruction": entry.get("reconstruction"),
            "generation": gen,
            "latent_style_accuracy_from_z": entry.get("latent", {}).get("style_accuracy_from_z"),
            "chance": report.get("chance")}


def build_model(data: str | Path, out: str | Path, device: str = "auto", work: str | Path | None = None,
                ae_run: str | Path | None = None, inverter_run: str | Path | None = None,
                inverter_config: dict | None = None, finetune_config: dict | None = None,
                ae_config: dict | None = None, keep_encoder: bool = True, from_bundle: str | Path | None = None,
                progress: bool = True) -> Path:
    """Run (or resume) every stage; returns the bundle folder."""
    from waeserver.data.dataset import NoteDataset
    from waeserver.model.evaluation import evaluate
    from waeserver.model.training import load_wae, train
    from waeserver.sound.bench import inversion_quality, pitch_accuracy
    from waeserver.sound.bundle import load_bundle, pick_device, save_bundle
    from waeserver.sound.finetune import finetune_decoder
    from waeserver.sound.inverter_training import train_inverter
    from waeserver.sound.inverters import describe, inverter_files, kind_of, load_inverter

    data, out = Path(data), Path(out)
    ds = NoteDataset(data)
    work = Path(work) if work else REPO / "runs" / f"build-{out.name}"
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(work, data)
    dev = pick_device(device)
    started = time.monotonic()
    if ae_run and from_bundle:
        raise BuildError("give --ae-run or --from-bundle, not both")
    source = load_bundle(from_bundle, "cpu") if from_bundle else None
    if source is not None and (source.styles != ds.styles or source.spectral != ds.spectral):
        raise BuildError(f"{from_bundle} was not trained on {data} (styles or spectral settings differ)")

    # 1. auto-encoder
    if not stages.done("autoencoder"):
        if source is not None:
            stages.mark("autoencoder", {"bundle": str(source.path), "training": source.card.get("training", {})})
        else:
            run = Path(ae_run) if ae_run else work / "autoencoder"
            if not ae_run and not (run / "model.safetensors").is_file():
                train(data, "wae-fader", run, ae_config, str(dev), resume=(run / "checkpoint.pt").is_file(),
                      progress=progress)
            _, meta = load_wae(run, "cpu")
            if list(meta.get("styles", [])) != ds.styles or meta.get("spectral") != ds.spectral.to_dict():
                raise BuildError(f"{run} was not trained on {data} (styles or spectral settings differ)")
            stages.mark("autoencoder", {"run": str(run), "training": meta.get("training", {})})
    if source is not None:
        wae = _wae_of(source, dev)
        pitch_range = list(source.pitch_range)
    else:
        wae, meta = load_wae(Path(stages.done("autoencoder")["run"]), dev)
        pitch_range = meta.get("pitch_range")

    # 2. real-time inverter
    if not stages.done("inverter"):
        if inverter_run:
            inv_dir = Path(inverter_run)
            if inverter_files(inv_dir) is None:
                raise BuildError(f"{inv_dir} holds no trained inverter (inverter.safetensors)")
            inv_metrics = yaml.safe_load((inv_dir / "metrics.yaml").read_text()) \
                if (inv_dir / "metrics.yaml").is_file() else {}
        else:
            inv_dir = work / "inverter"
            inv_metrics = train_inverter(data, inv_dir, inverter_config, dev, resume=True, progress=progress)
        inverter = load_inverter(inv_dir)
        if inverter.cfg.sample_rate != ds.sample_rate or inverter.cfg.hop_length != ds.spectral.hop_length:
            raise BuildError(f"{inv_dir} was trained for another sample rate or hop than {data}")
        stages.mark("inverter", {"run": str(inv_dir), "valid": inv_metrics})
    inv_dir = Path(stages.done("inverter")["run"])
    inverter = load_inverter(inv_dir, dev)
    name = kind_of(inverter)
    inverters = {name: inverter}
    if source is not None:
        # the old bundle's inverters, for comparison (an old one of the same name gives way)
        inverters.update({f"{k}-before" if k == name else k: v.to(dev)
                          for k, v in source.inverters.items()})

    # 3. fine-tuning
    ft_dir = work / "finetune"
    if not stages.done("finetune"):
        result = finetune_decoder(wae, inverter, data, ft_dir, finetune_config, resume=True, progress=progress)
        stages.mark("finetune", result)
    from safetensors.torch import load_file
    wae.decoder.load_state_dict(load_file(str(ft_dir / "decoder.safetensors")))
    wae.eval()

    # 4. the study's evaluation of the auto-encoder
    if not stages.done("evaluate"):
        if source is not None:
            stages.mark("evaluate", (source.card.get("evaluation") or {}).get("autoencoder") or {})
        else:
            report = evaluate([Path(stages.done("autoencoder")["run"])], data, work / "evaluate", str(dev),
                              progress=progress)
            stages.mark("evaluate", _autoencoder_summary(report))

    # 5. bundle, then its audio figures into the card
    info = dataset_card(ds)
    info["pitch_range"] = pitch_range or info["pitch_range"]
    evaluation = {"autoencoder": stages.done("evaluate"), "inverter_valid": stages.done("inverter")["valid"],
                  "finetune": stages.done("finetune")}
    info["evaluation"] = evaluation
    ae_from = stages.done("autoencoder")
    info["training"] = {"autoencoder": _repo_relative(Path(ae_from.get("run") or ae_from["bundle"])),
                        "inverter": _repo_relative(inv_dir), "inverter_config": describe(inverter),
                        "autoencoder_summary": ae_from["training"]}
    encoder = wae.encoder if keep_encoder else None

    def write() -> None:
        save_bundle(out, wae.decoder, inverters, ds.spectral, ds.styles, default_inverter=name,
                    name=out.name, encoder=encoder, info=info)

    write()
    bundle = load_bundle(out, dev)
    evaluation["audio"] = inversion_quality(bundle, data)
    evaluation["pitch"] = pitch_accuracy(bundle)
    write()
    load_bundle(out, "cpu")
    stages.mark("bundle", {"out": str(out), "seconds": round(time.monotonic() - started, 1)})
    log.info("build: %s written (pitch within 50 cents: %.1f%%, %s SC %.3f)", out,
             100 * evaluation["pitch"].get("within_tolerance", 0), name, evaluation["audio"][name]["sc"])
    return out


def _wae_of(bundle, device):
    """A WAE holding a bundle's encoder and decoder (no discriminator: nothing here trains it)."""
    from waeserver.model.wae import WAE, ModelConfig

    if bundle.encoder is None:
        raise BuildError(f"{bundle.path} carries no encoder: fine-tuning needs one")
    cfg = ModelConfig.from_dict(bundle.card["model"])
    wae = WAE(cfg)
    wae.encoder.load_state_dict(bundle.encoder.state_dict())
    wae.decoder.load_state_dict(bundle.decoder.state_dict())
    return wae.to(device).eval()


__all__ = ["BuildError", "STAGES", "build_model"]
