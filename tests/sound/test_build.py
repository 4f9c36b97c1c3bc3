"""``waeserver build-model`` on the tiny dataset: a new inverter, fine-tuning, a checked bundle."""

from __future__ import annotations

import pytest
import yaml

from waeserver.cli import main
from waeserver.sound.build import BuildError, build_model
from waeserver.sound.bundle import load_bundle, make_test_bundle

TINY_INVERTER = {"kind": "harmonic", "steps": 2, "batch_size": 2, "crop_frames": 8, "log_every": 1,
                 "model": {"hidden": 8, "max_harmonics": 16}}
TINY_FINETUNE = {"steps": 2, "batch_size": 2, "crop_frames": 8, "log_every": 1}


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
    assert not (tmp_path / "x").exists()
