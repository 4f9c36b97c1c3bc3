"""The study's evaluation, end to end on tiny runs, and its measures on known inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from waeserver.cli import main as cli_main
from waeserver.model.evaluation import (
    EvaluateError,
    correlation_ratio,
    evaluate,
    latent_correlations,
    latent_style_accuracy,
)
from waeserver.model.training import TrainError, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_pair(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-runs")
    for variant in ("wae-note", "wae-fader"):
        train(tiny_dataset, variant, root / variant, {"epochs": 2, "batch_size": 16}, device="cpu", progress=False)
    return root


def test_evaluate_writes_tables_json_and_figures(tiny_dataset, tiny_pair, tmp_path, caplog):
    out = tmp_path / "report"
    runs = [tiny_pair / "wae-note", tiny_pair / "wae-fader"]
    report = evaluate(runs, tiny_dataset, out, device="cpu", progress=False, per_style=8, classifier_epochs=4)
    for name in ("ablation.md", "report.json", "classifiers.safetensors", "classifiers.yaml", "latent.png",
                 "reconstruction-wae-note.png", "reconstruction-wae-fader.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert list(saved["variants"]) == ["wae-note", "wae-fader"]
    assert set(saved["classifiers_test_accuracy"]) == {"pitch_class", "octave", "style"}
    fader = saved["variants"]["wae-fader"]
    for scope in ("octaves_3_4", "full_range"):
        assert all(0.0 <= fader["generation"][scope][k] <= 1.0 for k in ("pitch_class", "octave", "style"))
    assert fader["generation"]["octaves_3_4"]["pitch_range"] == [48, 71]
    assert fader["reconstruction"]["log_mel_distance"] > 0 and fader["reconstruction"]["spectral_convergence"] > 0
    assert len(fader["latent"]["correlation"]["style"]) == 3
    assert 0.0 <= fader["transfer"]["style"] <= 1.0 and 0.0 <= fader["transfer"]["source_style"] <= 1.0
    table = (out / "ablation.md").read_text()
    assert table.index("Judges") < table.index("Variants side by side")
    assert "| wae-note |" in table and "| wae-fader |" in table

    # the judges are cached: a second evaluation reuses them and reports the same accuracy
    stamp = (out / "classifiers.safetensors").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="waeserver.model.evaluation"):
        again = evaluate(runs[1:], tiny_dataset, out, device="cpu", progress=False, per_style=4)
    assert (out / "classifiers.safetensors").stat().st_mtime_ns == stamp
    assert again["classifiers_test_accuracy"] == report["classifiers_test_accuracy"]
    assert "from the cache" in caplog.text


def test_evaluate_refuses_what_it_cannot_use(tiny_dataset, tiny_pair, tmp_path, capsys):
    with pytest.raises(TrainError, match="no trained model"):
        evaluate([tmp_path], tiny_dataset, tmp_path / "r", device="cpu", progress=False)
    assert cli_main(["evaluate", "--model", str(tmp_path / "missing"), "--data", str(tiny_dataset),
                     "--out", str(tmp_path / "r")]) == 1
    assert "no trained model" in capsys.readouterr().err
    card = tiny_pair / "wae-note" / "model.yaml"
    text = card.read_text()
    try:
        card.write_text(text.replace("- violin", "- cello"))
        with pytest.raises(EvaluateError, match="styles"):
            evaluate([tiny_pair / "wae-note"], tiny_dataset, tmp_path / "r", device="cpu", progress=False)
    finally:
        card.write_text(text)
    from bundles import make_test_bundle

    from waeserver.sound.bundle import load_wae_or_bundle

    bundle = make_test_bundle(tmp_path / "decoder-only", encoder=False)
    with pytest.raises(EvaluateError, match="no encoder"):
        evaluate([bundle], tiny_dataset, tmp_path / "r", device="cpu", progress=False, load=load_wae_or_bundle)
    assert not (tmp_path / "r").exists()


def test_latent_style_accuracy_tells_informative_from_blind_latents():
    rng = np.random.default_rng(0)
    style = rng.integers(0, 4, 400)
    informative = np.eye(4)[style][:, :3] * 3 + rng.normal(0, 0.3, (400, 3))
    blind = rng.normal(0, 1, (400, 3))
    assert latent_style_accuracy(informative[:300], style[:300], informative[300:], style[300:], 4, epochs=150) > 0.9
    assert latent_style_accuracy(blind[:300], style[:300], blind[300:], style[300:], 4, epochs=150) < 0.45


def test_correlations():
    rng = np.random.default_rng(1)
    cats = rng.integers(0, 5, 500)
    assert correlation_ratio(cats, cats * 2.0) == pytest.approx(1.0)
    assert correlation_ratio(cats, rng.normal(size=500)) < 0.2
    pitch = rng.integers(40, 80, 500)
    z = np.stack([pitch * 0.1, rng.normal(size=500)], axis=1)
    labels = {"pitch": pitch, "octave": pitch // 12 - 1, "velocity": rng.integers(0, 127, 500),
              "pitch_class": pitch % 12, "style": cats}
    corr = latent_correlations(z, labels)
    assert corr["pitch"][0] == pytest.approx(1.0) and corr["pitch"][1] < 0.2
    assert set(corr) == {"pitch", "octave", "velocity", "pitch_class", "style"}
