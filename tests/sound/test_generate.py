"""``waeserver generate`` end to end on a small bundle, and the bench figures it rests on."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from bundles import make_test_bundle

from waeserver.cli import main
from waeserver.sound.bench import format_report, machine, pitch_accuracy, speed
from waeserver.sound.bundle import load_bundle
from waeserver.sound.generate import parse_style, parse_z


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return make_test_bundle(tmp_path_factory.mktemp("models") / "tiny-model", sample_rate=16000)


def test_generate_writes_a_wav_at_the_bundles_rate(bundle_path, tmp_path, capsys):
    out = tmp_path / "note.wav"
    assert main(["generate", "--model", str(bundle_path), "--pitch", "60", "--velocity", "90",
                 "--style", "flute=0.7,violin=0.3", "--z", "0.1,-0.2,0.3", "-o", str(out)]) == 0
    wave, rate = sf.read(out)
    assert rate == 16000
    assert wave.shape == (128 * 256,)
    assert np.abs(wave).max() > 0
    assert "wrote" in capsys.readouterr().out


def test_generate_is_reproducible_with_a_seed_and_offers_griffin_lim(bundle_path, tmp_path):
    paths = [tmp_path / f"{k}.wav" for k in "abc"]
    for path, seed in zip(paths, (3, 3, 4)):
        assert main(["generate", "--model", str(bundle_path), "--pitch", "67", "--z", "random",
                     "--seed", str(seed), "-o", str(path)]) == 0
    a, b, c = (sf.read(p)[0] for p in paths)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    gla = tmp_path / "gla.wav"
    assert main(["generate", "--model", str(bundle_path), "--pitch", "67", "--inverter", "gla", "-o", str(gla)]) == 0
    assert sf.read(gla)[0].shape == a.shape


@pytest.mark.parametrize("argv, message", [
    (["--style", "tuba=1"], "unknown style 'tuba'"),
    (["--style", "flute=3"], "between 0 and 2"),
    (["--z", "1,2"], "needs 3 finite numbers"),
    (["--pitch", "20"], "outside"),
    (["--inverter", "wavenet"], "has no inverter 'wavenet'; it has: harmonic, mcnn (and gla, Griffin-Lim)"),
])
def test_generate_refuses_bad_input_with_one_line(bundle_path, tmp_path, capsys, argv, message):
    out = tmp_path / "x.wav"
    args = ["generate", "--model", str(bundle_path), "-o", str(out)] + argv
    if "--pitch" not in argv:
        args += ["--pitch", "60"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_generate_refuses_a_missing_bundle(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nothing"), "--pitch", "60", "-o", str(tmp_path / "x.wav")]) == 1
    assert "no model bundle" in capsys.readouterr().err


def test_style_and_z_parsing(bundle_path):
    b = load_bundle(bundle_path)
    assert parse_style(None, b).tolist() == [1.0, 0.0, 0.0]
    assert parse_style("violin", b).tolist() == [0.0, 0.0, 1.0]
    assert parse_z("random", 3, 5).tolist() == parse_z(None, 3, 5).tolist()
    assert parse_z("1,2,3", 3, None).tolist() == [1.0, 2.0, 3.0]


def test_bench_figures_on_a_small_bundle(bundle_path):
    b = load_bundle(bundle_path)
    s = speed(b, repeats=2, batch=2, gla_repeats=1)
    assert s["decoder_ms"]["median"] > 0 and set(s["inverters_ms"]) == {"harmonic", "mcnn"}
    assert all(v["median"] > 0 for v in s["inverters_ms"].values()) and s["inverter"] == "harmonic"
    assert s["notes_per_second_batched"] > 0 and all(v > 0 for v in s["speedup_over_gla"].values())
    p = pitch_accuracy(b, batch=64)
    # the untrained bundle is not expected to be in tune; the figure must still be a fraction
    assert p["notes"] == 3 * 36 and 0.0 <= p["within_tolerance"] <= 1.0
    text = format_report({"machine": {"processor": "x"}, "model": b.name, "speed": [s], "pitch": p})
    assert "harmonic" in text and "mcnn" in text and "pitch" in text
    here = machine()
    assert len(here["load_average"]) == 3
    assert "load average" in format_report({"machine": here, "model": b.name, "speed": [s], "pitch": p})
    assert torch.isfinite(torch.tensor(s["real_time_factor"]))


def test_the_pitch_of_generated_notes_beside_that_of_the_recordings(tiny_dataset):
    """With the dataset, the pitch figure says what YIN reads off the recordings of the same notes
    (those the dataset has), and how many generated notes agree with their recording."""
    from waeserver.data.dataset import NoteDataset
    from waeserver.sound.bench import recorded_pitches

    b = load_bundle(make_test_bundle(tiny_dataset.parent / "tiny-model-pitch"))
    p = pitch_accuracy(b, batch=64, data=tiny_dataset)
    notes = {(r["style"], r["pitch"]) for r in NoteDataset(tiny_dataset).rows}
    in_range = {(s, q) for s, q in notes if 48 <= q <= 83}
    assert p["notes"] == 3 * 36 and p["recordings"] == len(in_range) > 0
    # TimGM6mb's piano, flute and violin read at their own pitches
    assert p["recordings_within_tolerance"] >= 0.9
    assert 0.0 <= p["within_tolerance_of_recordings"] <= 1.0
    assert "recordings of the same notes" in format_report({"machine": {"processor": "x"}, "model": b.name,
                                                          "speed": [], "pitch": p})
    assert recorded_pitches(tiny_dataset, [("piano", 20)]) == {}   # a note the dataset lacks


def test_quality_figures_compare_every_path_and_the_judges_hear_each(tiny_dataset):
    """Griffin-Lim, each inverter and the whole model against the recordings, side by side; the
    judges on the recordings themselves and on every path's audio."""
    from waeserver.data.dataset import NoteDataset
    from waeserver.model.evaluation import train_classifiers
    from waeserver.sound.bench import inversion_quality

    b = load_bundle(make_test_bundle(tiny_dataset.parent / "tiny-model-22k"))
    judges, _ = train_classifiers(NoteDataset(tiny_dataset), torch.device("cpu"), epochs=1, progress=False)
    q = inversion_quality(b, tiny_dataset, max_notes=4, batch=2, judges=judges)
    assert q["notes"] == 4 and q["inverter"] == "harmonic"
    for path in ("gla", "harmonic", "mcnn", "model"):
        assert set(q[path]) == {"sc", "lsd_db", "mrstft"} and all(np.isfinite(v) for v in q[path].values())
    # an untrained inverter is far from the recordings; Griffin-Lim of the real mels is not
    assert q["gla"]["sc"] < q["harmonic"]["sc"]
    assert set(q["judges"]) == {"recording", "gla", "harmonic", "mcnn", "model"}
    assert all(set(v) == {"pitch_class", "octave", "style", "per_style"} for v in q["judges"].values())
    per_style = q["judges"]["recording"]["per_style"]
    assert set(per_style) <= {"piano", "flute", "violin"} and all(0 <= v["right"] <= 1 for v in per_style.values())
