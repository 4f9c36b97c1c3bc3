"""docs/tutorial-own-samples.md end to end: a folder of samples with two custom tags, imported with the
tutorial's tag file, built into a model with its config (a few training steps), served on a dummy JACK
server and played from each fader, named after the tags."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from test_daemon import RATE, Osc, Probe, free_port, wait_for

from waeserver import cli
from waeserver.data.dataset import NoteDataset
from waeserver.data.user_samples import import_library
from waeserver.dsp.pitch import estimate_pitch, midi_to_hz

log = logging.getLogger(__name__)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own-samples"
TAGS = ("bowed", "plucked")
# The tutorial's build.yaml with its step counts cut to seconds (its other settings kept).
FEW_STEPS = {"autoencoder": {"epochs": 30, "batch_size": 4, "lr": 0.002},
             "inverter": {"steps": 20, "max_minutes": 0, "batch_size": 4, "crop_frames": 16, "log_every": 5,
                          "model": {"hidden": 16, "max_harmonics": 40}},
             "finetune": {"steps": 10, "max_minutes": 0, "batch_size": 4, "crop_frames": 16, "log_every": 5},
             "evaluate": {"per_style": 8, "classifier_epochs": 8}}
NOTE_S = 0.8
# how much brighter (spectral centroid over f0, octaves) a bowed note must be than a plucked one of the
# same pitch; the samples differ by about 2. (The test once asked every bowed note to differ from every
# plucked one by more than notes of one fader differ across pitches: a few training steps leave the
# plucked timbre's brightness varying by up to 2 octaves over the pitches, and it failed 1 run in 7.)
BRIGHTER_BY = 0.5


def make_demo_library(folder: Path) -> Path:
    spec = importlib.util.spec_from_file_location("make_demo_library", EXAMPLE / "make_demo_library.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_library(folder)


def brightness(note: np.ndarray, pitch: int) -> float:
    """What tells the two timbres apart at any pitch: the spectral centroid of the note's first 0.3 s over
    its f0, in octaves (about 3 for the bowed samples, under 1 for the plucked). Their other difference,
    the plucked decay, a few training steps do not learn at every pitch."""
    window = note[int(0.03 * RATE):int(0.33 * RATE)]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    freqs = np.fft.rfftfreq(len(window), 1 / RATE)
    return float(np.log2(np.sum(freqs * spectrum) / np.sum(spectrum) / midi_to_hz(pitch)))


def silent(osc: Osc) -> bool:
    osc.send("/wae/status")
    return osc.expect("/wae/status.reply")[0] == 0          # no voice sounding


@contextlib.contextmanager
def serving(model: Path, jack_server: str, tmp_path: Path):
    """``waeserver serve`` as the tutorial runs it, as a process, until it says ``ready``; yields an OSC
    client and a JACK probe; stops it with SIGTERM."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "waeserver", "serve", "--config", str(EXAMPLE / "serve.yaml"),
                             "--model", str(model), "--device", "cpu",
                             "--jack-server", jack_server, "--osc-port", str(port), "--no-jack-connect",
                             "--preset-dir", str(tmp_path / "presets"), "--render-dir", str(tmp_path / "renders")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    osc = probe = None
    try:
        deadline = time.monotonic() + 60
        while not any("ready" in line for line in lines) and proc.poll() is None:
            assert time.monotonic() < deadline, "not ready in 60 s:\n" + "".join(lines)
            time.sleep(0.05)
        assert proc.poll() is None, "".join(lines)
        osc, probe = Osc(port), Probe(jack_server)
        yield osc, probe
    finally:
        for client in (osc, probe):
            if client is not None:
                client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def play_each_fader(osc: Osc, probe: Probe, pitches: tuple[int, ...]) -> tuple[dict, list[int]]:
    """Each tag's fader at 1 and the other at 0, a note at each pitch recorded from out_1: the notes
    ``{(tag, pitch): [NOTE_S * RATE] from the onset}`` and, per tag, the stand-ins among them."""
    notes, standins = {}, []
    for k, tag in enumerate(TAGS):
        for other in TAGS:
            osc.send("/wae/style", other, 1.0 if other == tag else 0.0)
        osc.send("/wae/sync", k)
        osc.expect("/wae/synced")
        for pitch in pitches:           # once, so that the notes below find renders made for this fader
            osc.send("/wae/note", pitch, 100, 0.1)
        time.sleep(1.0)
        osc.send("/wae/status")
        before = osc.expect("/wae/status.reply")[10]
        for pitch in pitches:
            wait_for(lambda: silent(osc))    # the note before released and faded out
            mark = probe.n
            osc.send("/wae/note", pitch, 100, NOTE_S)
            time.sleep(NOTE_S + 0.1)
            audio = probe.since(mark)[0]
            loud = np.flatnonzero(np.abs(audio) > 1e-3)
            assert len(loud), f"{tag} {pitch}: silent"
            notes[tag, pitch] = audio[loud[0]:loud[0] + int(NOTE_S * RATE)]
        osc.send("/wae/status")
        standins.append(osc.expect("/wae/status.reply")[10] - before)
    return notes, standins


@pytest.mark.slow
def test_a_library_with_two_tags_imported_built_served_and_played_from_each_fader(tmp_path, jack_server, capsys):
    # 1. the samples: bowed at 44.1 kHz stereo, plucked at 22.05 kHz mono
    started = time.monotonic()
    library = make_demo_library(tmp_path / "my samples")
    assert {sf.info(p).samplerate for p in library.glob("bowed/*")} == {44100}
    assert {sf.info(p).channels for p in library.glob("plucked/*")} == {1}

    # 2. dataset import with the tutorial's tag file, dataset info
    data = tmp_path / "datasets" / "my-library"
    assert cli.main(["-q", "dataset", "import", str(library), "--tags", str(EXAMPLE / "tags.yaml"),
                     "--out", str(data)]) == 0
    assert "imported 32 notes in 2 styles (bowed, plucked), 0 files left out" in capsys.readouterr().out
    ds = NoteDataset(data)
    assert ds.styles == list(TAGS) and ds.sample_rate == 22050
    by_source = {r["source"]: r for r in ds.rows}
    assert by_source["bowed/long_F#3.wav"]["pitch"] == 54                  # from the file name
    assert by_source["plucked/pluck-01.flac"]["pitch"] == 52                # from the tag file
    assert (by_source["plucked/pluck-05.flac"]["pitch"], by_source["plucked/pluck-05.flac"]["pitch_estimated"]) \
        == (56, 1)                                                          # from the audio
    assert by_source["plucked/pluck-04.flac"]["velocity"] == 45             # a soft take
    # played below: low, middle and high pitches that both tags have in the training split
    both = sorted(set.intersection(*({r["pitch"] for r in ds.rows if r["style"] == tag and r["split"] == "train"}
                                     for tag in TAGS)))
    pitches = (both[0], both[len(both) // 2], both[-1])
    assert cli.main(["dataset", "info", str(data)]) == 0
    assert "bowed" in capsys.readouterr().out
    # the tutorial's CSV form of the same tag file tags every file alike
    import_library(library, EXAMPLE / "tags.csv", tmp_path / "from-csv", progress=False)
    columns = ("source", "pitch", "style", "velocity", "pitch_estimated", "split")
    assert [[r[c] for c in columns] for r in NoteDataset(tmp_path / "from-csv").rows] == \
        [[r[c] for c in columns] for r in ds.rows]

    # 3. build-model with the tutorial's config, its steps cut
    laptop = yaml.safe_load((EXAMPLE / "build.yaml").read_text())
    assert set(laptop) == set(FEW_STEPS)
    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump({k: {**laptop[k], **FEW_STEPS[k]} for k in FEW_STEPS}))
    model = tmp_path / "models" / "my-instrument"
    imported = time.monotonic()
    assert cli.main(["-q", "build-model", "--data", str(data), "--out", str(model), "--config", str(config),
                     "--work", str(tmp_path / "work"), "--device", "cpu"]) == 0
    built = time.monotonic()
    assert capsys.readouterr().out.startswith(f"built {model}: 2 styles")
    card = yaml.safe_load((model / "card.yaml").read_text())
    assert card["styles"] == list(TAGS)

    # 4. serve it with the tutorial's config (its CC map names the tags), on the dummy JACK server
    with serving(model, jack_server, tmp_path) as (osc, probe):
        ready = time.monotonic()
        osc.send("/wae/model/info")
        assert osc.expect("/wae/model/info.reply") == ["my-instrument", 3, 22050, *TAGS]

        # 5. a note from each fader: /wae/style TAG 1, the other 0
        notes, standins = play_each_fader(osc, probe, pitches)

        # 6. the faders from a MIDI controller (the config's CC 1 and 2), kept as a preset
        osc.send("/wae/notify", 1)
        osc.expect("/done", first="/wae/notify")
        probe.midi(0xB0, 1, 127)
        probe.midi(0xB0, 2, 0)
        wait_for(lambda: osc.expect("/wae/state", first="styles") == ["styles", 1.0, 0.0])
        osc.send("/wae/preset/save", "bowed-only")
        osc.expect("/done", first="/wae/preset/save")
        preset = yaml.safe_load((tmp_path / "presets" / "bowed-only.yaml").read_text())
        assert preset["styles"] == {"bowed": 1.0, "plucked": 0.0}
    assert standins == [0, 0], "a note played a render made for the other fader"

    # 7. each fader's notes sound, at their pitch, and each bowed note is brighter than the plucked one of its pitch
    levels = {key: float(np.sqrt(np.mean(note[:int(0.3 * RATE)] ** 2))) for key, note in notes.items()}
    found = {key: estimate_pitch(note[int(0.03 * RATE):int(0.33 * RATE)], RATE) for key, note in notes.items()}
    yin = {key: est.midi if est else float("nan") for key, est in found.items()}
    bright = {key: brightness(note, key[1]) for key, note in notes.items()}
    apart = min(bright[TAGS[0], p] - bright[TAGS[1], p] for p in pitches)   # bowed over plucked, same pitch
    report = "\n".join([f"import {imported - started:.1f} s, build {built - imported:.1f} s, serve ready "
                        f"{ready - built:.1f} s, played {time.monotonic() - ready:.1f} s; the bowed fader's notes "
                        f"brighter than the plucked one's at the same pitch by at least {apart:.2f} octave"]
                       + [f"{tag} {pitch}: rms {levels[tag, pitch]:.4f}, YIN {yin[tag, pitch]:.2f}, brightness "
                          f"{bright[tag, pitch]:.2f}" for tag, pitch in notes])
    log.info("%s", report)
    assert all(level > 1e-3 for level in levels.values()), report
    assert all(abs(midi - pitch) < 1.0 for (_, pitch), midi in yin.items()), report     # NaN fails too
    assert apart > BRIGHTER_BY, report
