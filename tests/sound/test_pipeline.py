"""``waeserver build-model`` on the tiny dataset: a new inverter, fine-tuning, a checked bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from bundles import make_test_bundle

from waeserver.cli import main
from waeserver.sound import finetune
from waeserver.sound.bundle import load_bundle
from waeserver.sound.generate import generate_note
from waeserver.sound.pipeline import STAGES, BuildError, build_model

TINY_INVERTER = {"kind": "harmonic", "steps": 2, "batch_size": 2, "crop_frames": 8, "log_every": 1,
                 "model": {"hidden": 8, "max_harmonics": 16}}
TINY_FINETUNE = {"steps": 2, "batch_size": 2, "crop_frames": 8, "log_every": 1}
TINY_AE = {"epochs": 2, "batch_size": 16, "model": {"enc_channels": 16, "dec_channels": 16, "hidden": 32}}


def test_a_whole_build_interrupted_after_a_stage_resumes_from_the_stages_done(tiny_dataset, tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "tiny-bundle"
    settings = dict(device="cpu", work=work, ae_config=TINY_AE, inverter_config=TINY_INVERTER,
                    finetune_config=TINY_FINETUNE, evaluate_config={"per_style": 4, "classifier_epochs": 3},
                    progress=False)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune, "finetune_decoder", ctrl_c)      # stopped once the inverter is trained
    with pytest.raises(KeyboardInterrupt):
        build_model(tiny_dataset, out, **settings)
    monkeypatch.undo()
    assert list(yaml.safe_load((work / "stages.yaml").read_text())["done"]) == ["autoencoder", "inverter"]
    assert not out.exists()
    trained = [work / "autoencoder" / "model.safetensors", work / "inverter" / "inverter.safetensors"]
    stamps = [p.stat().st_mtime_ns for p in trained]
    build_model(tiny_dataset, out, **settings)
    assert [p.stat().st_mtime_ns for p in trained] == stamps          # neither trained again
    stages = yaml.safe_load((work / "stages.yaml").read_text())["done"]
    assert list(stages) == list(STAGES) and stages["finetune"]["steps"] == 2
    bundle = load_bundle(out)
    assert bundle.default_inverter == "harmonic" and list(bundle.inverters) == ["harmonic"]
    assert bundle.encoder is not None
    assert set(bundle.card["evaluation"]["autoencoder"]["judges_test_accuracy"]) == {"pitch_class", "octave", "style"}
    judges = yaml.safe_load((work / "evaluate" / "classifiers.yaml").read_text())
    assert judges["epochs"] == 3                                   # the evaluate section was used
    low, high = bundle.pitch_range
    wave = generate_note(bundle, (low + high) // 2, velocity=100)
    # a few training steps make a quiet note, but a note: the bundle's length, finite, not silence
    assert wave.shape == (bundle.n_samples,) and np.isfinite(wave).all() and np.sqrt(np.mean(wave ** 2)) > 1e-5


def test_a_bundle_rebuilt_around_a_new_inverter_keeps_the_old_one(tiny_dataset, tmp_path):
    old = make_test_bundle(tmp_path / "old")
    out = build_model(tiny_dataset, tmp_path / "new", device="cpu", work=tmp_path / "work", from_bundle=old,
                      inverter_config=TINY_INVERTER, finetune_config=TINY_FINETUNE, progress=False)
    b = load_bundle(out)
    # the new harmonic inverter plays; the old bundle's come along under their names
    assert b.default_inverter == "harmonic" and set(b.inverters) == {"harmonic", "harmonic-before", "mcnn"}
    assert b.inverter.cfg.max_harmonics == 16 and b.encoder is not None
    card = yaml.safe_load((out / "card.yaml").read_text())
    stages = yaml.safe_load((tmp_path / "work" / "stages.yaml").read_text())
    assert set(stages["done"]) == {"autoencoder", "inverter", "finetune", "evaluate", "bundle"}
    assert card["evaluation"]["finetune"]["steps"] == 2
    for path in ("harmonic", "mcnn", "gla", "model"):
        assert card["evaluation"]["audio"][path]["sc"] > 0
    assert 0.0 <= card["evaluation"]["pitch"]["within_tolerance"] <= 1.0
    # run again: every stage is done, the same bundle comes out
    again = build_model(tiny_dataset, tmp_path / "new", device="cpu", work=tmp_path / "work", from_bundle=old,
                        inverter_config=TINY_INVERTER, finetune_config=TINY_FINETUNE, progress=False)
    assert load_bundle(again).card["weights"]["sha256"] == card["weights"]["sha256"]


def test_a_build_that_keeps_its_source_decoder(tiny_dataset, tmp_path):
    """examples/build-keep-decoder.yaml: a new inverter, the source bundle's decoder as it was."""
    from waeserver.cli.build_model import read_build_config

    old = make_test_bundle(tmp_path / "old")
    config = read_build_config(Path(__file__).resolve().parents[2] / "examples" / "build-keep-decoder.yaml")
    out = build_model(tiny_dataset, tmp_path / "new", device="cpu", work=tmp_path / "work", from_bundle=old,
                      inverter_config=TINY_INVERTER, finetune_config=config["finetune"], progress=False)
    before, after = load_bundle(old).decoder.state_dict(), load_bundle(out).decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert load_bundle(out).card["evaluation"]["finetune"]["steps"] == 0


def test_a_build_from_a_bundle_of_other_data_or_with_both_sources_is_refused(tiny_dataset, tmp_path, capsys):
    other = make_test_bundle(tmp_path / "other", styles=("cello", "oboe"))
    with pytest.raises(BuildError, match="not trained on"):
        build_model(tiny_dataset, tmp_path / "x", work=tmp_path / "w1", from_bundle=other, progress=False)
    with pytest.raises(BuildError, match="not both"):
        build_model(tiny_dataset, tmp_path / "x", work=tmp_path / "w2", from_bundle=other, ae_run=tmp_path,
                    progress=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcnn: {steps: 3}\n")
    assert main(["build-model", "--data", str(tiny_dataset), "--out", str(tmp_path / "x"),
                 "--config", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown build settings: mcnn" in err and len(err.splitlines()) == 1
    # a typo in a later stage's section is refused before the first stage runs
    bad.write_text("finetune: {stepz: 3}\n")
    assert main(["build-model", "--data", str(tiny_dataset), "--out", str(tmp_path / "x"), "--work",
                 str(tmp_path / "w3"), "--config", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown fine-tuning settings: stepz" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "w3").exists()
    for section, message in (("evaluate: {per_style: 0}", "evaluate per_style must be a whole number"),
                             ("evaluate: {judges: 3}", "unknown evaluate settings: judges")):
        bad.write_text(section + "\n")
        assert main(["build-model", "--data", str(tiny_dataset), "--out", str(tmp_path / "x"), "--work",
                     str(tmp_path / "w4"), "--config", str(bad)]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not (tmp_path / "w4").exists()
