"""``waeserver render``: a MIDI file and an automation timeline through the live engine, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
import torch
from bundles import make_test_bundle

from waeserver.cli import render as render_command
from waeserver.dsp.pitch import estimate_pitch
from waeserver.live.offline import read_automation

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "gm-orchestra"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    return make_test_bundle(tmp_path_factory.mktemp("models") / "offline-test")


def render(*argv) -> int:
    """``waeserver render ARGV`` (its own parser: errors raise, as the tests want)."""
    parser = argparse.ArgumentParser()
    render_command.add_arguments(parser)
    return render_command.run(parser.parse_args([str(a) for a in argv]))


def write_song(path: Path, notes, pedal=None) -> Path:
    """``notes``: (start s, length s, pitch[, velocity]); at 120 bpm, 480 ticks a beat, one second is
    960 ticks."""
    events = []
    for start, length, pitch, *velocity in notes:
        events.append((int(start * 960), mido.Message("note_on", note=pitch, velocity=(velocity or [100])[0])))
        events.append((int((start + length) * 960), mido.Message("note_off", note=pitch)))
    for t, value in pedal or []:
        events.append((int(t * 960), mido.Message("control_change", control=64, value=value)))
    song = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    song.tracks.append(track)
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=tick - now))
        now = tick
    song.save(path)
    return path


def test_example_song_renders_deterministically(model, tmp_path):
    for name in ("a.wav", "b.wav"):
        assert render(EXAMPLES / "song.mid", "--automation", EXAMPLES / "automation.yaml", "--model", model,
                      "--seed", 3, "-o", tmp_path / name, "--device", "cpu") == 0
    a, rate = sf.read(tmp_path / "a.wav")
    assert rate == 48000 and a.shape[1] == 2 and np.array_equal(a[:, 0], a[:, 1])
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert 19.0 < len(a) / rate < 19.2 + 2.0          # the song, then the last notes ring out
    assert np.sqrt(np.mean(a[: 18 * rate, 0] ** 2)) > 1e-4
    render(EXAMPLES / "song.mid", "--automation", EXAMPLES / "automation.yaml", "--model", model,
           "--seed", 4, "-o", tmp_path / "c.wav", "--device", "cpu")
    c, _ = sf.read(tmp_path / "c.wav")
    per_note = int(14.4 * rate)                       # the automation turns per-note z on here
    assert np.array_equal(a[:per_note], c[:per_note]) and not np.array_equal(a[per_note:], c[per_note:])


def test_notes_land_on_their_frames_and_automation_changes_the_sound(model, tmp_path):
    song = write_song(tmp_path / "two.mid", [(0.5, 0.4, 60), (1.5, 0.4, 60)])
    render(song, "--model", model, "-o", tmp_path / "plain.wav", "--release", 0.05)
    plain, rate = sf.read(tmp_path / "plain.wav")
    onsets = np.flatnonzero(np.abs(plain[:, 0]) > 0)
    assert onsets[0] in (24000, 24001)
    assert not plain[int(1.0 * rate):int(1.5 * rate)].any()     # released and silent between the notes
    assert estimate_pitch(plain[24000:24000 + rate // 4, 0], rate).midi == pytest.approx(60, abs=0.3)
    automation = tmp_path / "auto.yaml"
    automation.write_text("- {time: 1.0, address: /wae/mix, args: [violin, 1.0]}\n"
                          "- [1.2, /wae/gain, [0.5]]\n")
    render(song, "--model", model, "-o", tmp_path / "morphed.wav", "--release", 0.05, "--automation", automation)
    morphed, _ = sf.read(tmp_path / "morphed.wav")
    np.testing.assert_array_equal(plain[:rate], morphed[:rate])
    assert np.abs(morphed[int(1.5 * rate):]).max() < 0.6 * np.abs(plain[int(1.5 * rate):]).max() + 1e-4
    second = plain[int(1.5 * rate):]
    assert np.abs(morphed[int(1.5 * rate):] * 2 - second).max() > 0.02 * np.abs(second).max()   # another timbre


def test_sustain_pedal_in_a_song(model, tmp_path):
    song = write_song(tmp_path / "pedal.mid", [(0.1, 0.1, 64)], pedal=[(0.0, 127), (0.8, 0)])
    render(song, "--model", model, "-o", tmp_path / "pedal.wav", "--release", 0.05)
    audio, rate = sf.read(tmp_path / "pedal.wav")
    assert np.abs(audio[int(0.6 * rate):int(0.8 * rate)]).max() > 1e-4     # held by the pedal
    assert not audio[int(0.8 * rate) + int(0.05 * rate) + 256:].any()


def spectral_centroid(audio: np.ndarray, rate: int) -> float:
    power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    return float((power * np.fft.rfftfreq(len(audio), 1 / rate)).sum() / power.sum())


def test_a_soft_note_is_darker_than_a_loud_one_and_the_curve_sets_its_level(tmp_path):
    """Velocity layers offline, with the shipped trained bundle: its trumpet at C4, velocity 40 and
    120 (the datasets' p and ff layers), through ``waeserver render``. The soft note's spectral
    centroid is lower, as in the recordings (FluidR3's trumpet there: 1182 Hz against 1464 Hz; its
    piano, flute and strings do not change with velocity, so they could not show it). The layers
    are levelled, so the linear velocity curve alone sets the level: 120/40, where the model's own
    p and ff renders differ some tenfold. Only orders and rough ratios are tested, not one
    bundle's numbers."""
    song = write_song(tmp_path / "dynamics.mid", [(0.1, 0.8, 60, 40), (1.5, 0.8, 60, 120)])
    automation = tmp_path / "trumpet.yaml"
    automation.write_text("- {time: 0.0, address: /wae/mix, args: [trumpet, 1.0]}\n")
    render(song, "--model", SHIPPED, "--automation", automation, "-o", tmp_path / "dynamics.wav", "--device", "cpu")
    audio, rate = sf.read(tmp_path / "dynamics.wav")
    soft, loud = (audio[int(t * rate):int((t + 0.5) * rate), 0] for t in (0.15, 1.55))
    assert spectral_centroid(soft, rate) < spectral_centroid(loud, rate)
    level = lambda x: np.sqrt(np.mean(x ** 2))  # noqa: E731
    assert 2.5 < level(loud) / level(soft) < 3.6


@pytest.mark.parametrize("text, message", [
    ("- {time: -1, address: /wae/gain, args: [1]}", "time must be seconds"),
    ("- {time: 0, address: wae/gain, args: [1]}", "must be an OSC address"),
    ("- {time: 0, adress: /wae/gain}", "unknown key 'adress'"),
    ("- 5", "expected {time, address, args}"),
    ("- [0, /wae/gain, [1]", "not valid YAML"),
    ("gain: 1", "must be a list of events"),
])
def test_bad_automation_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        read_automation(path)


def test_refused_automation_and_bad_songs_stop_with_one_line(model, tmp_path):
    song = write_song(tmp_path / "one.mid", [(0.1, 0.2, 60)])
    automation = tmp_path / "auto.yaml"
    automation.write_text("- [0.5, /wae/style, [tuba, 1.0]]\n")
    with pytest.raises(ValueError, match=r"automation at 0.5 s: /wae/style refused: unknown style 'tuba'"):
        render(song, "--model", model, "-o", tmp_path / "x.wav", "--automation", automation)
    automation.write_text("- [0.5, /wae/nope, []]\n")
    with pytest.raises(ValueError, match="unknown address /wae/nope"):
        render(song, "--model", model, "-o", tmp_path / "x.wav", "--automation", automation)
    garbage = tmp_path / "garbage.mid"
    garbage.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    with pytest.raises(ValueError, match="not a readable MIDI file"):
        render(garbage, "--model", model, "-o", tmp_path / "x.wav")
    with pytest.raises(OSError, match="cannot read MIDI file"):
        render(tmp_path / "missing.mid", "--model", model, "-o", tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()
