"""Importing a user's own sample folder with a tag file."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf

from waeserver import cli
from waeserver.data.dataset import NoteDataset
from waeserver.data.user_samples import TagFileError, import_library, read_tag_file
from waeserver.dsp.pitch import estimate_pitch, midi_to_hz, pitch_from_name


def harmonic_tone(pitch: float, sr: int, seconds: float = 1.2, stereo: bool = False) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    f = midi_to_hz(pitch)
    wave = sum(0.3 / k * np.sin(2 * np.pi * k * f * t) for k in range(1, 6))
    wave *= np.minimum(1, t / 0.01) * np.exp(-t * 1.5)
    wave = wave.astype(np.float32)
    return np.stack([wave, 0.5 * wave], axis=1) if stereo else wave


@pytest.fixture
def library(tmp_path):
    src = tmp_path / "my samples"
    (src / "bowed").mkdir(parents=True)
    (src / "plucked").mkdir()
    sf.write(src / "bowed" / "long_C#4.wav", harmonic_tone(61, 44100, stereo=True), 44100)
    sf.write(src / "bowed" / "long_Eb3.flac", harmonic_tone(51, 48000), 48000)
    sf.write(src / "bowed" / "tagged.wav", harmonic_tone(64, 22050), 22050)  # pitch from the tag file
    sf.write(src / "plucked" / "mystery.aiff", harmonic_tone(57, 32000), 32000, format="AIFF")
    sf.write(src / "plucked" / "noise.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 30000)
             .astype(np.float32), 22050)  # no pitch anywhere
    (src / "plucked" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage, not audio")
    sf.write(src / "plucked" / "empty_A4.wav", np.zeros((0,), dtype=np.float32), 22050)
    sf.write(src / "untagged_G4.wav", harmonic_tone(67, 22050), 22050)
    tags = tmp_path / "tags.yaml"
    tags.write_text(
        "files:\n"
        "  'bowed/*': {style: bowed, velocity: 90}\n"
        "  'bowed/tagged.wav': {pitch: E4}\n"
        "  'plucked/*': plucked\n")
    return src, tags


def digest(folder) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_import_labels_rejects_and_leaves_source_alone(library, tmp_path, capsys):
    src, tags = library
    before = digest(src)
    out = tmp_path / "ds"
    assert cli.main(["-q", "dataset", "import", str(src), "--tags", str(tags), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert digest(src) == before

    ds = NoteDataset(out)
    assert ds.styles == ["bowed", "plucked"]
    by_source = {r["source"]: r for r in ds.rows}
    assert set(by_source) == {"bowed/long_C#4.wav", "bowed/long_Eb3.flac", "bowed/tagged.wav",
                              "plucked/mystery.aiff"}
    assert by_source["bowed/long_C#4.wav"]["pitch"] == 61
    assert by_source["bowed/long_Eb3.flac"]["pitch"] == 51
    assert by_source["bowed/tagged.wav"]["pitch"] == 64
    assert by_source["bowed/tagged.wav"]["velocity"] == 90
    mystery = by_source["plucked/mystery.aiff"]
    assert mystery["pitch"] == 57 and mystery["pitch_estimated"] == 1
    assert sum(r["pitch_estimated"] for r in ds.rows) == 1

    rejected = ds.meta["rejected"]
    assert set(rejected) == {"plucked/noise.wav", "plucked/broken.wav", "plucked/empty_A4.wav",
                             "untagged_G4.wav"}
    assert "pitch" in rejected["plucked/noise.wav"]
    assert "unreadable" in rejected["plucked/broken.wav"]
    assert "silent" in rejected["plucked/empty_A4.wav"]
    assert "style" in rejected["untagged_G4.wav"]
    for name in rejected:
        assert name in printed

    for i in range(len(ds)):
        info = sf.info(out / "audio" / ds.rows[i]["file"])
        assert (info.samplerate, info.channels, info.frames) == (22050, 1, ds.spectral.n_samples)
    assert ds.features().shape == (4, 128, 128)


def test_csv_tags(library, tmp_path):
    src, _ = library
    tags = tmp_path / "tags.csv"
    tags.write_text("pattern,style,pitch,velocity\nbowed/*,strings,,\nmystery.aiff,harp,A3,70\n")
    meta = import_library(src, tags, tmp_path / "ds", progress=False)
    ds = NoteDataset(tmp_path / "ds")
    assert ds.styles == ["harp", "strings"]
    harp = [r for r in ds.rows if r["style"] == "harp"]
    assert len(harp) == 1 and harp[0]["pitch"] == 57 and harp[0]["velocity"] == 70
    assert harp[0]["pitch_estimated"] == 0
    assert "plucked/noise.wav" in meta["rejected"]


@pytest.mark.parametrize("text, words", [
    ("files: [1, 2]", "pattern"),
    ("files:\n  '*.wav': {style: a, pitch: H9}", "neither a MIDI number"),
    ("files:\n  '*.wav': {style: a, colour: red}", "unknown tags"),
    ("files:\n  '*.wav': {style: a, velocity: 300}", "outside 1..127"),
    (": : :", "not valid YAML"),
])
def test_bad_tag_files_are_refused(tmp_path, text, words):
    path = tmp_path / "tags.yaml"
    path.write_text(text)
    with pytest.raises(TagFileError, match=words):
        read_tag_file(path)


def test_bad_tag_file_leaves_no_dataset(library, tmp_path, capsys):
    src, _ = library
    bad = tmp_path / "bad.yaml"
    bad.write_text("files:\n  '*': {style: a, pitch: 999}\n")
    assert cli.main(["dataset", "import", str(src), "--tags", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "pitch 999" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name, pitch", [
    ("violin_C#4", 61), ("Eb2-soft", 39), ("flute a4", 69), ("sax_Fs3", 54), ("C-1", 0),
    ("flute2", None), ("take3", None), ("Bb7", 106),
])
def test_pitch_from_file_name(name, pitch):
    assert pitch_from_name(name) == pitch


@pytest.mark.parametrize("pitch", [33, 48, 60, 69, 84])
def test_yin_finds_the_pitch_of_a_harmonic_tone(pitch):
    est = estimate_pitch(harmonic_tone(pitch, 22050), 22050)
    assert est is not None and abs(est.midi - pitch) < 0.1
