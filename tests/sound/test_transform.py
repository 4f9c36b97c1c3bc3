"""``waeserver transform``: a recorded note found, encoded, decoded again; bad sounds refused."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from bundles import make_test_bundle
from scipy.signal import resample_poly

from waeserver.cli import main
from waeserver.data.dataset import NoteDataset
from waeserver.sound.bundle import load_bundle
from waeserver.sound.transform import TransformError, encode, note_pitch, prepare_note


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return make_test_bundle(tmp_path_factory.mktemp("models") / "tiny-model")


@pytest.fixture(scope="module")
def recorded(tiny_dataset, tmp_path_factory):
    """A flute note of the tiny dataset as a user would bring it: stereo, 44.1 kHz, 0.3 s of silence first."""
    ds = NoteDataset(tiny_dataset)
    i = next(k for k, r in enumerate(ds.rows) if r["style"] == "flute" and r["pitch"] >= 72)
    note = resample_poly(ds.audio(i), 2, 1)
    take = np.concatenate([np.zeros(13230), note])
    path = tmp_path_factory.mktemp("takes") / "flute.wav"
    sf.write(path, np.stack([take, 0.5 * take], axis=1), 44100)
    return path, ds.rows[i]["pitch"], ds.audio(i)


def test_the_note_is_found_on_its_onset_and_keeps_its_pitch(bundle_path, recorded):
    from waeserver.data.user_samples import load_mono

    b = load_bundle(bundle_path)
    path, pitch, original = recorded
    note = prepare_note(load_mono(path, b.sample_rate), b.n_samples, b.sample_rate)
    assert note.shape == (b.n_samples,)
    # the leading silence is gone: the note starts where the dataset's recording starts
    start = int(np.argmax(np.abs(note) > 0.01 * np.abs(note).max()))
    assert start < 0.01 * b.sample_rate
    assert note_pitch(note, b) == pitch
    z = encode(b, note)
    assert z.shape == (b.latent_size,) and torch.isfinite(z).all()


def test_transform_writes_the_note_and_its_variations(bundle_path, recorded, tmp_path, capsys):
    path, pitch, _ = recorded
    out = tmp_path / "one.wav"
    assert main(["transform", str(path), "--model", str(bundle_path), "--style", "violin",
                 "--z-shift", "0.5,0,0", "-o", str(out)]) == 0
    wave, rate = sf.read(out)
    assert rate == 22050 and wave.shape == (128 * 256,) and np.abs(wave).max() > 0
    assert f"pitch {pitch}" in capsys.readouterr().out
    folder = tmp_path / "many"
    assert main(["transform", str(path), "--model", str(bundle_path), "--pitch", "60", "--variations", "3",
                 "--spread", "1.0", "-o", str(folder)]) == 0
    notes = sorted(folder.glob("*.wav"))
    assert [p.name for p in notes] == ["flute-001.wav", "flute-002.wav", "flute-003.wav"]
    waves = [sf.read(p)[0] for p in notes]
    assert not np.array_equal(waves[0], waves[1])


@pytest.mark.parametrize("make, message", [
    (lambda: np.zeros(40000), "silent"),
    (lambda: np.r_[np.zeros(1000), 0.5 * np.ones(200), np.zeros(1000)], "too short"),
    (lambda: np.random.default_rng(0).normal(0, 0.3, 40000), "no clear pitch"),
])
def test_bad_sounds_are_refused_with_one_line(bundle_path, tmp_path, capsys, make, message):
    take = tmp_path / "take.wav"
    sf.write(take, make(), 22050)
    out = tmp_path / "x.wav"
    assert main(["transform", str(take), "--model", str(bundle_path), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_unreadable_files_and_bad_arguments_are_refused(bundle_path, recorded, tmp_path, capsys):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....not audio")
    path, _, _ = recorded
    for argv, message in (([str(junk)], "cannot read"),
                          ([str(path), "--z-shift", "1,2"], "needs 3 finite numbers"),
                          ([str(path), "--pitch", "200"], "outside"),
                          ([str(path), "--style", "tuba"], "unknown style 'tuba'")):
        assert main(["transform", *argv, "--model", str(bundle_path), "-o", str(tmp_path / "y.wav")]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    with pytest.raises(TransformError, match="finite mono"):
        prepare_note(np.full(100, np.nan), 1000, 22050)


# --- the shipped bundle and the study's judges ----------------------------------------------------

@pytest.fixture(scope="module")
def orchestra(tmp_path_factory):
    """orchestra12 rendered from FluidR3_GM, as the shipped gm-orchestra was trained, and the
    study's judges trained on it (about two minutes on one core)."""
    from waeserver.data.soundfont import render_dataset
    from waeserver.model.evaluation import load_or_train_classifiers

    root = tmp_path_factory.mktemp("orchestra")
    render_dataset("orchestra12", root / "orchestra12", progress=False, workers=1)
    ds = NoteDataset(root / "orchestra12")
    (root / "judges").mkdir()
    judges, _ = load_or_train_classifiers(ds, root / "judges", torch.device("cpu"), progress=False)
    return ds, judges


def test_a_flute_transformed_into_oboe_is_heard_as_oboe_and_kept_as_flute_it_stays_close(orchestra, tmp_path):
    from waeserver.dsp.spectral import MelSpectrogram, spectral_convergence, stft_magnitude
    from waeserver.model.evaluation import classify

    ds, judges = orchestra
    flutes = [int(i) for i in ds.indices("test") if ds.rows[int(i)]["style"] == "flute"
              and ds.rows[int(i)]["pitch"] <= 84][:4]
    assert len(flutes) == 4
    to_mel = MelSpectrogram(ds.spectral)

    def spectrum(wave):
        return stft_magnitude(torch.from_numpy(np.asarray(wave, dtype=np.float32))[None], ds.spectral)

    for i in flutes:
        take = tmp_path / f"take-{i}.wav"
        sf.write(take, ds.audio(i), ds.sample_rate)
        for style in ("oboe", "flute"):
            assert main(["transform", str(take), "--model", "gm-orchestra", "--style", style,
                         "--velocity", str(ds.rows[i]["velocity"]), "-o", str(tmp_path / f"{style}-{i}.wav")]) == 0
        oboe, flute = (sf.read(tmp_path / f"{s}-{i}.wav", dtype="float32")[0] for s in ("oboe", "flute"))
        heard = classify(judges, to_mel(torch.from_numpy(oboe)[None]))["style"][0]
        assert ds.styles[int(heard)] == "oboe"
        original = spectrum(ds.audio(i))
        kept, moved = (float(spectral_convergence(spectrum(w), original)) for w in (flute, oboe))
        assert kept < 0.6 and kept < moved
