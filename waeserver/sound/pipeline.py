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
from dataclasses import dataclass
from pathlib import Path

import yaml

from waeserver.dsp.pitch import NOTE_NAMES
from waeserver.model.evaluation import CLASSIFIER_EPOCHS, GEN_PER_STYLE
from waeserver.settings import from_plain, read_mapping

log = logging.getLogger(__name__)

STAGES = ("autoencoder", "inverter", "finetune", "evaluate", "bundle")
REPO = Path(__file__).resolve().parents[2]


class BuildError(ValueError):
    """A build that cannot go on, with the reason."""


class Stages:
    """``WORK/stages.yaml``: which stages are done and what they produced."""

    def __init__(self, work: Path, data: Path):
        self.path = work / "stages.yaml"
        self.state = read_mapping(self.path, "build stages", BuildError) if self.path.is_file() else {}
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
            "pitch_classes": list(NOTE_NAMES),
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


@dataclass
class EvaluateStageConfig:
    """The ``evaluate`` section of a build config: the study's figures of the auto-encoder, in its card."""

    per_style: int = GEN_PER_STYLE              # notes generated per style and range for the generation figures
    classifier_epochs: int = CLASSIFIER_EPOCHS  # the judges' training (cached in the work folder once trained)

    def __post_init__(self):
        for name in ("per_style", "classifier_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10000:
                raise BuildError(f"evaluate {name} must be a whole number from 1 to 10000, got {value!r}")


@dataclass
class _Build:
    """What every stage works with: the dataset, the work folder and its stages, the device."""

    data: Path
    ds: object          # NoteDataset
    work: Path
    stages: Stages
    dev: object         # torch.device
    progress: bool


def build_model(data: str | Path, out: str | Path, device: str = "auto", work: str | Path | None = None,
                ae_run: str | Path | None = None, inverter_run: str | Path | None = None,
                inverter_config: dict | None = None, finetune_config: dict | None = None,
                ae_config: dict | None = None, keep_encoder: bool = True, from_bundle: str | Path | None = None,
                progress: bool = True, evaluate_config: dict | None = None) -> Path:
    """Run (or resume) every stage; returns the bundle folder.

    Every setting is checked before the first stage runs: a typo in the fine-tuning section is
    refused at once, not after the auto-encoder and the inverter have trained.
    """
    from waeserver.data.dataset import NoteDataset
    from waeserver.model.devices import pick_device
    from waeserver.model.training import merge_config
    from waeserver.sound.bundle import load_bundle
    from waeserver.sound.finetune import FinetuneConfig
    from waeserver.sound.inverter_training import InverterTrainConfig

    if ae_run and from_bundle:
        raise BuildError("give --ae-run or --from-bundle, not both")
    data, out = Path(data), Path(out)
    ds = NoteDataset(data)
    merge_config(ae_config)
    inverter_settings = InverterTrainConfig.from_dict(dict(inverter_config or {}))
    finetune_settings = FinetuneConfig.from_dict(dict(finetune_config or {}))
    evaluate_settings = from_plain(EvaluateStageConfig, dict(evaluate_config or {}), "evaluate settings")
    dev = pick_device(device)
    source = load_bundle(from_bundle, "cpu") if from_bundle else None
    if source is not None and (source.styles != ds.styles or source.spectral != ds.spectral):
        raise BuildError(f"{from_bundle} was not trained on {data} (styles or spectral settings differ)")
    work = Path(work) if work else REPO / "runs" / f"build-{out.name}"
    stages = Stages(work, data)
    work.mkdir(parents=True, exist_ok=True)
    b = _Build(data, ds, work, stages, dev, progress)
    started = time.monotonic()

    wae, pitch_range = _autoencoder_stage(b, source, ae_run, ae_config)
    inverter, inverters = _inverter_stage(b, source, inverter_run, inverter_settings)
    _finetune_stage(b, wae, inverter, finetune_settings)
    _evaluate_stage(b, source, evaluate_settings)
    _bundle_stage(b, out, wae.encoder if keep_encoder else None, wae.decoder, inverters, pitch_range)
    stages.mark("bundle", {"out": str(out), "seconds": round(time.monotonic() - started, 1)})
    return out


def _autoencoder_stage(b: _Build, source, ae_run: str | Path | None, ae_config: dict | None):
    """The auto-encoder: trained into WORK/autoencoder (resuming its checkpoint), the ``ae_run`` given,
    or the bundle's. Returns (WAE on the device, pitch range or None)."""
    from waeserver.model.training import load_wae, train

    if not b.stages.done("autoencoder"):
        if source is not None:
            b.stages.mark("autoencoder", {"bundle": str(source.path), "training": source.card.get("training", {})})
        else:
            run = Path(ae_run) if ae_run else b.work / "autoencoder"
            if not ae_run and not (run / "model.safetensors").is_file():
                train(b.data, "wae-fader", run, ae_config, str(b.dev), resume=(run / "checkpoint.pt").is_file(),
                      progress=b.progress)
            _, meta = load_wae(run, "cpu")
            if list(meta.get("styles", [])) != b.ds.styles or meta.get("spectral") != b.ds.spectral.to_dict():
                raise BuildError(f"{run} was not trained on {b.data} (styles or spectral settings differ)")
            b.stages.mark("autoencoder", {"run": str(run), "training": meta.get("training", {})})
    if source is not None:
        return _wae_of(source, b.dev), list(source.pitch_range)
    wae, meta = load_wae(Path(b.stages.done("autoencoder")["run"]), b.dev)
    return wae, meta.get("pitch_range")


def _inverter_stage(b: _Build, source, inverter_run: str | Path | None, settings):
    """The real-time inverter: trained into WORK/inverter (resuming) or the ``inverter_run`` given.
    Returns (it on the device, every inverter the bundle carries by name, it first: with ``source``
    the old bundle's too, for comparison; an old one of the new one's name becomes NAME-before)."""
    from waeserver.sound.inverter_training import train_inverter
    from waeserver.sound.inverters import inverter_files, kind_of, load_inverter

    if not b.stages.done("inverter"):
        if inverter_run:
            inv_dir = Path(inverter_run)
            if inverter_files(inv_dir) is None:
                raise BuildError(f"{inv_dir} holds no trained inverter (inverter.safetensors)")
            found = inv_dir / "metrics.yaml"
            inv_metrics = read_mapping(found, "inverter metrics", BuildError) if found.is_file() else {}
        else:
            inv_dir = b.work / "inverter"
            inv_metrics = train_inverter(b.data, inv_dir, settings, b.dev, resume=True, progress=b.progress)
        inverter = load_inverter(inv_dir)
        if inverter.cfg.sample_rate != b.ds.sample_rate or inverter.cfg.hop_length != b.ds.spectral.hop_length:
            raise BuildError(f"{inv_dir} was trained for another sample rate or hop than {b.data}")
        b.stages.mark("inverter", {"run": str(inv_dir), "valid": inv_metrics})
    inverter = load_inverter(Path(b.stages.done("inverter")["run"]), b.dev)
    name = kind_of(inverter)
    inverters = {name: inverter}
    if source is not None:
        inverters.update({f"{k}-before" if k == name else k: v.to(b.dev) for k, v in source.inverters.items()})
    return inverter, inverters


def _finetune_stage(b: _Build, wae, inverter, settings) -> None:
    """The decoder fine-tuned through the frozen inverter in WORK/finetune (resuming); ``wae`` ends
    with the fine-tuned decoder, in eval mode."""
    from safetensors.torch import load_file

    from waeserver.sound.finetune import finetune_decoder

    ft_dir = b.work / "finetune"
    if not b.stages.done("finetune"):
        result = finetune_decoder(wae, inverter, b.data, ft_dir, settings, resume=True, progress=b.progress)
        b.stages.mark("finetune", result)
    wae.decoder.load_state_dict(load_file(str(ft_dir / "decoder.safetensors")))
    wae.eval()


def _evaluate_stage(b: _Build, source, settings: EvaluateStageConfig) -> None:
    """The study's evaluation of the auto-encoder (a bundle's own figures with ``source``)."""
    from waeserver.model.evaluation import evaluate

    if b.stages.done("evaluate"):
        return
    if source is not None:
        b.stages.mark("evaluate", (source.card.get("evaluation") or {}).get("autoencoder") or {})
        return
    report = evaluate([Path(b.stages.done("autoencoder")["run"])], b.data, b.work / "evaluate", str(b.dev),
                      progress=b.progress, per_style=settings.per_style,
                      classifier_epochs=settings.classifier_epochs)
    b.stages.mark("evaluate", _autoencoder_summary(report))


def _bundle_stage(b: _Build, out: Path, encoder, decoder, inverters: dict, pitch_range) -> None:
    """Weights and card to ``out``, then the audio figures measured on the bundle itself (inversion
    quality, pitch of generated notes) into its card; the bundle is loaded back as a check."""
    from waeserver.sound.bench import inversion_quality, pitch_accuracy
    from waeserver.sound.bundle import load_bundle, save_bundle
    from waeserver.sound.inverters import describe

    name = next(iter(inverters))     # the new inverter, the one the bundle plays
    done = b.stages.done
    info = dataset_card(b.ds)
    info["pitch_range"] = pitch_range or info["pitch_range"]
    evaluation = {"autoencoder": done("evaluate"), "inverter_valid": done("inverter")["valid"],
                  "finetune": done("finetune")}
    info["evaluation"] = evaluation
    ae_from = done("autoencoder")
    info["training"] = {"autoencoder": _repo_relative(Path(ae_from.get("run") or ae_from["bundle"])),
                        "inverter": _repo_relative(Path(done("inverter")["run"])),
                        "inverter_config": describe(inverters[name]), "autoencoder_summary": ae_from["training"]}

    def write() -> None:
        save_bundle(out, decoder, inverters, b.ds.spectral, b.ds.styles, default_inverter=name,
                    name=out.name, encoder=encoder, info=info)

    write()
    bundle = load_bundle(out, b.dev)
    evaluation["audio"] = inversion_quality(bundle, b.data)
    evaluation["pitch"] = pitch_accuracy(bundle, data=b.data)
    write()
    load_bundle(out, "cpu")
    log.info("build: %s written (pitch within 50 cents: %.1f%%, %s SC %.3f)", out,
             100 * evaluation["pitch"].get("within_tolerance", 0), name, evaluation["audio"][name]["sc"])


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
