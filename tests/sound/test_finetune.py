"""Fine-tuning on the real `tiny` set: a small decoder learns through a frozen inverter, resumes at
the step it stopped, and refuses bad settings and another run's checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from waeserver.data.dataset import NoteDataset
from waeserver.dsp.pitch import midi_to_f0
from waeserver.dsp.stft_loss import MultiResolutionSTFTLoss
from waeserver.model import training_run
from waeserver.model.wae import WAE, ModelConfig
from waeserver.sound.finetune import finetune_decoder, note_tensors
from waeserver.sound.inverters import new_inverter

torch.set_num_threads(1)
TINY = {"steps": 8, "batch_size": 4, "crop_frames": 16, "lr": 1e-2, "log_every": 1, "checkpoint_every": 4}


@pytest.fixture(scope="module")
def ds(tiny_dataset):
    return NoteDataset(tiny_dataset)


def tiny_models(ds: NoteDataset) -> tuple[WAE, torch.nn.Module]:
    """A small auto-encoder and harmonic inverter for ``ds`` (untrained, the same each call),
    normalised with its features' statistics."""
    feats = np.asarray(ds.features())
    norm = {"mel_offset": float(feats.mean()), "mel_scale": float(feats.std())}
    sp = ds.spectral
    torch.manual_seed(0)
    wae = WAE(ModelConfig(n_mels=sp.n_mels, n_frames=sp.n_frames, n_styles=len(ds.styles), enc_channels=16,
                          dec_channels=16, embed_dim=8, hidden=32, **norm))
    inverter = new_inverter("harmonic", {"n_mels": sp.n_mels, "hop_length": sp.hop_length,
                                         "sample_rate": sp.sample_rate, "f_min": sp.f_min, "f_max": sp.f_max,
                                         "hidden": 8, "max_harmonics": 16, **norm})
    return wae, inverter


@torch.no_grad()
def training_loss(wae: WAE, inverter: torch.nn.Module, notes: dict, n: int = 16) -> float:
    """The multi-resolution loss of encoder -> decoder -> inverter audio against the first ``n``
    training notes, whole."""
    part = {k: v[:n] for k, v in notes.items()}
    mel = wae.decoder(wae.encoder(part["mel"]), part["pitch"], part["style"], part["velocity"])
    loss, _ = MultiResolutionSTFTLoss()(inverter(mel, midi_to_f0(part["pitch"])), part["wave"])
    return float(loss)


def logged_steps(folder) -> list[int]:
    return [int(row.split(",")[0]) for row in (folder / "metrics.csv").read_text().splitlines()[1:]]


def test_fine_tuning_lowers_the_decoders_loss_through_the_frozen_inverter(ds, tiny_dataset, tmp_path):
    wae, inverter = tiny_models(ds)
    notes = note_tensors(ds, "train", len(ds.styles))
    before = training_loss(wae, inverter, notes)
    frozen = [(m, {k: v.clone() for k, v in m.state_dict().items()}) for m in (wae.encoder, inverter)]
    result = finetune_decoder(wae, inverter, tiny_dataset, tmp_path, TINY, progress=False)
    after = training_loss(wae, inverter, notes)
    assert after < 0.9 * before, (before, after)
    assert result["steps"] == 8 and logged_steps(tmp_path) == list(range(1, 9))
    assert set(result["valid_before"]) == set(result["valid_after"]) == {"sc", "lsd_db"}
    for module, state in frozen:                                     # only the decoder learnt
        assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())
    saved = load_file(str(tmp_path / "decoder.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in wae.decoder.state_dict().items())


def test_an_interrupted_fine_tuning_resumes_at_the_step_it_stopped(ds, tiny_dataset, tmp_path, monkeypatch):
    real_save = training_run.save_checkpoint

    def save_then_stop(path, state):    # Ctrl-C just after the checkpoint of step 4
        real_save(path, state)
        if int(state["step"]) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        finetune_decoder(*tiny_models(ds), tiny_dataset, tmp_path, TINY, progress=False)
    monkeypatch.setattr(training_run, "save_checkpoint", real_save)
    cut = (tmp_path / "metrics.csv").read_text().splitlines()
    assert logged_steps(tmp_path) == [1, 2, 3, 4] and not (tmp_path / "decoder.safetensors").exists()
    # a new process: the models as they were, the decoder's weights and the step from the checkpoint
    result = finetune_decoder(*tiny_models(ds), tiny_dataset, tmp_path, TINY, resume=True, progress=False)
    assert result["steps"] == 8 and logged_steps(tmp_path) == list(range(1, 9))
    assert (tmp_path / "metrics.csv").read_text().splitlines()[:5] == cut
    # the finished run resumed again does nothing more
    assert finetune_decoder(*tiny_models(ds), tiny_dataset, tmp_path, TINY, resume=True, progress=False)["steps"] == 8
    assert logged_steps(tmp_path) == list(range(1, 9))


def test_a_bad_setting_or_another_runs_checkpoint_is_one_clear_error(ds, tiny_dataset, tmp_path):
    wae, inverter = tiny_models(ds)
    with pytest.raises(ValueError, match="unknown fine-tuning settings: stepz$"):
        finetune_decoder(wae, inverter, tiny_dataset, tmp_path / "bad", {"stepz": 3})
    assert not (tmp_path / "bad").exists()
    run = tmp_path / "run"
    finetune_decoder(wae, inverter, tiny_dataset, run, {**TINY, "steps": 2}, progress=False)
    written = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match=r"another config \(crop_frames: 16 there, 8 here\)"):
        finetune_decoder(*tiny_models(ds), tiny_dataset, run, {**TINY, "crop_frames": 8}, resume=True)
    assert (run / "checkpoint.pt").read_bytes() == written
    # run longer with another learning rate: the same run, continued
    longer = finetune_decoder(*tiny_models(ds), tiny_dataset, run, {**TINY, "steps": 3, "lr": 1e-3}, resume=True,
                              progress=False)
    assert longer["steps"] == 3 and logged_steps(run) == [1, 2, 3]
