"""Soundfont datasets rendered with real FluidSynth: labels, split, features, info, plot."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from waeserver import cli
from waeserver.data.dataset import NoteDataset, assign_splits, note_row
from waeserver.data.recipes import PRESETS, note_plan
from waeserver.data.soundfont import render_dataset


def test_tiny_labels_match_the_plan(tiny_dataset):
    ds = NoteDataset(tiny_dataset)
    plan = note_plan(PRESETS["tiny"])
    assert len(ds) == len(plan) == 78
    assert ds.styles == ["piano", "flute", "violin"]
    planned = Counter((n["style"], n["pitch"], n["velocity"]) for n in plan)
    assert Counter((r["style"], r["pitch"], r["velocity"]) for r in ds.rows) == planned
    for r in ds.rows:
        assert r["pitch_class"] == r["pitch"] % 12
        assert r["octave"] == r["pitch"] // 12 - 1
        assert r["source"] == "TimGM6mb.sf2"
        assert r["program"] == str(PRESETS["tiny"]["styles"][r["style"]]["program"])
        assert r["dynamics"] in {"mf", "ff"}


def test_tiny_audio_is_fixed_length_mono_and_audible(tiny_dataset):
    ds = NoteDataset(tiny_dataset)
    for i in (0, len(ds) // 2, len(ds) - 1):
        info = sf.info(tiny_dataset / "audio" / ds.rows[i]["file"])
        assert (info.samplerate, info.channels, info.frames) == (22050, 1, ds.spectral.n_samples)
        wave = ds.audio(i)
        assert np.abs(wave).max() > 0.01
        # released before the end: the last 50 ms are much quieter than the loudest part
        assert np.abs(wave[-1100:]).max() < 0.25 * np.abs(wave).max()


def test_split_is_stratified_and_deterministic(tiny_dataset):
    ds = NoteDataset(tiny_dataset)
    by_stratum: dict = {}
    for r in ds.rows:
        by_stratum.setdefault((r["style"], r["octave"]), Counter())[r["split"]] += 1
    for (style, octave), counts in by_stratum.items():
        if sum(counts.values()) >= 3:
            assert counts["test"] >= 1 and counts["valid"] >= 1, (style, octave, counts)
            assert counts["train"] > counts["test"]
    rows = [dict(r, split="") for r in ds.rows]
    assign_splits(rows)
    assert [r["split"] for r in rows] == [r["split"] for r in ds.rows]


def test_small_strata_stay_in_train():
    rows = [note_row(f"a{i}.wav", 60, "x", 100, "mf", "t") for i in range(2)]
    rows += [note_row(f"b{i}.wav", 72, "x", 100, "mf", "t") for i in range(20)]
    assign_splits(rows)
    assert {r["split"] for r in rows[:2]} == {"train"}
    assert Counter(r["split"] for r in rows[2:]) == {"train": 16, "valid": 2, "test": 2}


def test_features_are_cached_log_mels(tiny_dataset):
    ds = NoteDataset(tiny_dataset)
    feats = ds.features()
    assert feats.shape == (len(ds), 128, 128)
    assert np.isfinite(feats).all()
    assert feats.max() > np.log(ds.spectral.log_floor) + 5  # not all floor
    mtime = (tiny_dataset / "features.npy").stat().st_mtime_ns
    again = NoteDataset(tiny_dataset).features()
    assert (tiny_dataset / "features.npy").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(np.asarray(again), np.asarray(feats))
    labels = ds.labels(ds.indices("test"))
    assert set(labels) >= {"pitch_class", "octave", "style", "velocity"}
    assert len(labels["style"]) == len(ds.indices("test"))


def test_silent_renders_are_left_out_and_counted(tmp_path):
    # Velocity 0 is a note-off in FluidSynth: a real render that is silent.
    preset = {"name": "ghosts", "soundfont": "TimGM6mb", "velocities": [100], "hold_s": 0.3,
              "styles": {"piano": {"program": 0, "low": 60, "high": 62},
                         "ghost": {"program": 0, "low": 60, "high": 61, "velocities": [0]}}}
    meta = render_dataset(preset, tmp_path / "ds", progress=False, workers=1)
    assert meta["skipped"]["silent"] == 2
    assert sorted(meta["skipped_files"]) == ["ghost_060_v000.wav", "ghost_061_v000.wav"]
    ds = NoteDataset(tmp_path / "ds")
    assert len(ds) == 3 and ds.styles == ["piano"]


def test_info_command_prints_counts_and_plots(tiny_dataset, tmp_path, capsys):
    png = tmp_path / "grid.png"
    assert cli.main(["-q", "dataset", "info", str(tiny_dataset), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "notes        78" in out
    for style in ("piano", "flute", "violin"):
        assert style in out
    assert "train" in out and "valid" in out and "test" in out
    assert png.stat().st_size > 5000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, words", [
    (["dataset", "info", "/nonexistent"], "not a dataset"),
    (["dataset", "render", "--preset", "nope", "--out", "/tmp/x"], "unknown preset"),
    (["dataset", "render", "--preset", "tiny", "--soundfont", "NoSuchFont", "--out", "/tmp/x"],
     "soundfont not found"),
])
def test_bad_input_fails_with_one_line(argv, words, capsys):
    assert cli.main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0]


def test_corrupt_manifest_is_refused(tiny_dataset, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dataset.yaml").write_text((tiny_dataset / "dataset.yaml").read_text())
    with open(tiny_dataset / "manifest.csv") as src, open(bad / "manifest.csv", "w") as dst:
        rows = list(csv.reader(src))
        rows[1][1] = "not-a-pitch"
        csv.writer(dst).writerows(rows)
    with pytest.raises(ValueError, match="unreadable dataset"):
        NoteDataset(bad)
