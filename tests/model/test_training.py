"""Training on the real `tiny` set: every variant learns, alpha follows its schedule, files, resume, DDP."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from waeserver.cli import main as cli_main
from waeserver.model import training_run
from waeserver.model.losses import alpha_schedule
from waeserver.model.training import TrainError, load_wae, train
from waeserver.model.wae import VARIANTS

torch.set_num_threads(1)
QUICK = {"epochs": 4, "batch_size": 16, "lr": 2e-3, "lr_final": 1e-3}


def _metrics(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def tiny_runs(tiny_dataset, tmp_path_factory):
    """Each variant trained for a few epochs on `tiny`."""
    root = tmp_path_factory.mktemp("runs")
    for variant in VARIANTS:
        train(tiny_dataset, variant, root / variant, QUICK, device="cpu", progress=False)
    return root


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_learns_and_writes_a_run(tiny_runs, variant):
    run = tiny_runs / variant
    rows = _metrics(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["recon"]) < 0.8 * float(rows[0]["recon"])
    assert float(rows[-1]["valid_recon"]) < float(rows[0]["valid_recon"])
    for name in ("config.yaml", "model.yaml", "model.safetensors", "checkpoint.pt"):
        assert (run / name).is_file(), name
    meta = yaml.safe_load((run / "model.yaml").read_text())
    assert meta["variant"] == variant and meta["styles"] == ["piano", "flute", "violin"]
    assert meta["model"]["mel_scale"] > 0 and meta["spectral"]["n_mels"] == 128
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 4
    keys = set(load_file(str(run / "model.safetensors")))
    assert any(k.startswith("discriminator.") for k in keys) == (variant == "wae-fader")


def test_alpha_follows_its_schedule(tiny_runs):
    fader = _metrics(tiny_runs / "wae-fader")
    # logged alpha is that of each epoch's last step: 3 steps an epoch (62 notes, batches of 16), 12 in all
    expected = [alpha_schedule((e * 3 - 1) / 12) for e in range(1, 5)]
    assert [float(r["alpha"]) for r in fader] == pytest.approx(expected, rel=1e-5)
    assert float(fader[-1]["alpha"]) == 4.0
    assert all(float(r["alpha"]) == 0.0 for r in _metrics(tiny_runs / "wae-style"))
    assert all(float(r["disc"]) > 0 for r in fader)


def test_trained_decoder_answers_to_style(tiny_runs):
    wae, meta = load_wae(tiny_runs / "wae-fader")
    z, pitch, vel = torch.zeros(1, 3), torch.tensor([64]), torch.tensor([0.6])
    with torch.no_grad():
        piano = wae.decoder(z, pitch, torch.tensor([[1.0, 0, 0]]), vel)
        violin = wae.decoder(z, pitch, torch.tensor([[0, 0, 1.0]]), vel)
    assert (piano - violin).abs().mean().item() > 0.05
    # decoded log-mels are in real units (the normalisation is undone): near the data's range
    assert -13 < piano.mean().item() < 2


def test_resume_continues_where_it_stopped(tiny_dataset, tmp_path, monkeypatch):
    config = {**QUICK, "epochs": 3}
    whole = train(tiny_dataset, "wae-fader", tmp_path / "whole", config, device="cpu", progress=False)
    real_save = training_run.save_checkpoint

    def save_then_stop(path, state):
        real_save(path, state)
        if state["state"]["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_dataset, "wae-fader", tmp_path / "cut", config, device="cpu", progress=False)
    monkeypatch.setattr(training_run, "save_checkpoint", real_save)
    cut = tmp_path / "cut"
    assert not (cut / "model.safetensors").exists()
    with pytest.raises(TrainError, match="already holds"):
        train(tiny_dataset, "wae-fader", cut, config, device="cpu", progress=False)
    written = (cut / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainError, match="another config .*dec_channels"):
        train(tiny_dataset, "wae-fader", cut, {**config, "model": {"dec_channels": 32}}, device="cpu", resume=True)
    assert (cut / "checkpoint.pt").read_bytes() == written
    # a checkpoint of before run identities (variant and model config beside the state) resumes too
    ckpt = torch.load(cut / "checkpoint.pt", weights_only=True)
    identity = ckpt.pop("identity")
    torch.save({**ckpt, **identity}, cut / "checkpoint.pt")
    resumed = train(tiny_dataset, "wae-fader", cut, config, device="cpu", resume=True, progress=False)
    assert [int(r["epoch"]) for r in _metrics(cut)] == [1, 2, 3]
    assert resumed["epochs_run"] == whole["epochs_run"] == 3
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(cut / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_refusals_change_nothing(tiny_dataset, tmp_path):
    with pytest.raises(TrainError, match="does not exist"):
        train(tiny_dataset, "wae-fader", tmp_path / "none", QUICK, device="cpu", resume=True)
    with pytest.raises(TrainError, match="unknown training settings"):
        train(tiny_dataset, "wae-fader", tmp_path / "bad", {"epochz": 3}, device="cpu")
    with pytest.raises(TrainError, match="unknown variant"):
        train(tiny_dataset, "vae", tmp_path / "bad", QUICK, device="cpu")
    with pytest.raises(TrainError, match="no trained model"):
        load_wae(tmp_path)
    assert not (tmp_path / "none").exists() and not (tmp_path / "bad").exists()


def test_cli_reads_a_yaml_config_and_flags(tiny_dataset, tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 5, "batch_size": 16, "seed": 7, "model": {"dec_channels": 32}}))
    out = tmp_path / "run"
    code = cli_main(["-q", "train", "--data", str(tiny_dataset), "--variant", "wae-note", "--out", str(out),
                     "--config", str(cfg), "--epochs", "1", "--latent", "2"])
    assert code == 0
    used = yaml.safe_load((out / "config.yaml").read_text())
    assert (used["epochs"], used["seed"], used["latent"], used["model"]) == (1, 7, 2, {"dec_channels": 32})
    wae, meta = load_wae(out)
    assert wae.cfg.latent == 2 and wae.cfg.dec_channels == 32
    assert "trained wae-note" in capsys.readouterr().out
    cfg.write_text("epochs: [1\n")
    assert cli_main(["-q", "train", "--data", str(tiny_dataset), "--out", str(tmp_path / "x"),
                     "--config", str(cfg)]) == 1
    assert "not valid YAML" in capsys.readouterr().err


def test_torchrun_with_two_gloo_processes(tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", "-m", "waeserver", "-q", "train", "--data", str(tiny_dataset),
                           "--variant", "wae-fader", "--out", str(out), "--epochs", "1", "--batch-size", "8",
                           "--device", "cpu"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("trained wae-fader") == 1  # only rank 0 reports and writes
    meta = yaml.safe_load((out / "model.yaml").read_text())
    assert meta["training"]["processes"] == 2
    assert [int(r["epoch"]) for r in _metrics(out)] == [1]
    load_wae(out)
