"""The latent history: the same notes encoded at every epoch of a real tiny run, and its GIFs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from waeserver.data.dataset import NoteDataset
from waeserver.model.latent_history import HISTORY_FILE, LatentHistory, LatentRecorder, animate, pick_notes
from waeserver.model.training import load_wae, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("history") / "run"
    summary = train(tiny_dataset, "wae-fader", out, {"epochs": 4, "batch_size": 16}, device="cpu", progress=False)
    return out, summary


def test_pick_notes_takes_every_style_evenly(tiny_dataset):
    ds = NoteDataset(tiny_dataset)
    picked = pick_notes(ds, 30, seed=3)
    assert len(picked) == 30 and len(set(picked.tolist())) == 30 and np.all(np.diff(picked) > 0)
    assert np.bincount(ds.labels(picked)["style"], minlength=3).tolist() == [10, 10, 10]
    assert np.array_equal(picked, pick_notes(ds, 30, seed=3))
    assert len(pick_notes(ds, 10_000)) == len(ds)


def test_train_keeps_one_snapshot_per_epoch_and_the_model_is_its_best_epoch(tiny_dataset, tiny_run):
    run, summary = tiny_run
    h = LatentHistory.load(run / HISTORY_FILE)
    n = min(len(NoteDataset(tiny_dataset)), 240)
    assert h.z.shape == (5, n, 3) and h.z.dtype == np.float32
    assert h.epoch.tolist() == [0, 1, 2, 3, 4]
    assert h.alpha[0] == 0 and h.alpha[-1] > 0 and np.all(np.diff(h.alpha) >= 0)
    assert h.styles == ["piano", "flute", "violin"] and set(h.labels) >= {"pitch_class", "octave", "style"}
    assert not np.allclose(h.z[0], h.z[-1])   # training moved the points
    # the weights train() keeps (the best epoch's) put the notes where that epoch's snapshot has them
    wae, _ = load_wae(run)
    feats = np.asarray(NoteDataset(tiny_dataset).features())
    with torch.no_grad():
        z = wae.encoder(torch.from_numpy(np.ascontiguousarray(feats[h.index]))).numpy()
    assert np.abs(z - h.z[summary["best_epoch"]]).max() < 1e-4
    assert (run / HISTORY_FILE).stat().st_size < 100_000


def test_a_resumed_recorder_keeps_the_epochs_before_the_checkpoint(tiny_dataset, tiny_run, tmp_path):
    run, _ = tiny_run
    copy = tmp_path / HISTORY_FILE
    copy.write_bytes((run / HISTORY_FILE).read_bytes())
    ds = NoteDataset(tiny_dataset)
    wae, _ = load_wae(run)
    recorder = LatentRecorder(ds, np.asarray(ds.features()), tmp_path, wae.encoder, torch.device("cpu"),
                              resume_epoch=2)
    assert recorder.history.epoch.tolist() == [0, 1, 2]
    wae.encoder.train()
    recorder.record(wae.encoder, 3, 1.5)
    assert wae.encoder.training   # the encoder's mode is left as it was
    again = LatentHistory.load(copy)
    assert again.epoch.tolist() == [0, 1, 2, 3] and again.alpha[-1] == pytest.approx(1.5)
    # a fresh recorder starts over, with the encoder as it is as row 0
    (tmp_path / "fresh").mkdir()
    fresh = LatentRecorder(ds, np.asarray(ds.features()), tmp_path / "fresh", wae.encoder, torch.device("cpu"))
    assert fresh.history.epoch.tolist() == [0]


def test_animate_writes_raw_and_tsne_gifs_one_frame_per_snapshot(tiny_run, tmp_path):
    run, _ = tiny_run
    h = LatentHistory.load(run / HISTORY_FILE)
    paths = animate(h, tmp_path, "tiny", max_frames=4, fps=4, dpi=40)
    assert [p.name for p in paths] == ["latent-tiny-raw.gif", "latent-tiny-tsne.gif"]
    for path in paths:
        with Image.open(path) as gif:
            # 4 of the 5 snapshots at 250 ms, the last one held a second longer
            assert gif.n_frames == 4
            gif.seek(0)
            first = np.asarray(gif.convert("RGB"), dtype=np.int16)
            assert gif.info["duration"] == 250
            gif.seek(3)
            last = np.asarray(gif.convert("RGB"), dtype=np.int16)
            assert gif.info["duration"] == 1250
        assert np.abs(first - last).mean() > 0.5   # the points (and the title) move
