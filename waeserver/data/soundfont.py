"""Render labelled note datasets from a soundfont with FluidSynth, in-process, no audio driver."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from waeserver.data import dataset
from waeserver.data.recipes import PRESETS, SOUNDFONT_DIRS, dynamic_name, note_plan
from waeserver.dsp.spectral import SpectralConfig

log = logging.getLogger(__name__)

# A note whose loudest 4096-sample window is below this RMS is a program with no sample there.
SILENCE_DBFS = -80.0


def find_soundfont(name: str) -> Path:
    """A path, or a bare name such as ``FluidR3_GM`` looked up in the usual Debian folders."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    for folder in SOUNDFONT_DIRS:
        for ext in ("", ".sf2", ".sf3"):
            candidate = Path(folder) / f"{name}{ext}"
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"soundfont not found: {name} (looked in {', '.join(SOUNDFONT_DIRS)})")


class NoteRenderer:
    """One FluidSynth instance that plays single notes into numpy arrays."""

    def __init__(self, soundfont: Path, sample_rate: int):
        import fluidsynth

        self.sample_rate = sample_rate
        # No reverb or chorus: the dataset holds the instrument, not a room.
        self.synth = fluidsynth.Synth(gain=0.5, samplerate=sample_rate,
                                      **{"synth.reverb.active": 0, "synth.chorus.active": 0,
                                         "synth.polyphony": 64})
        self.sfid = self.synth.sfload(str(soundfont))
        if self.sfid < 0:
            raise ValueError(f"FluidSynth could not load {soundfont}")

    def render(self, program: int, pitch: int, velocity: int, hold_s: float, n_samples: int,
               bank: int = 0) -> np.ndarray:
        """Note on, held ``hold_s``, released, until ``n_samples``; mono float32 in [-1, 1]."""
        synth = self.synth
        synth.program_select(0, self.sfid, bank, program)
        synth.noteon(0, pitch, velocity)
        hold = min(n_samples, max(1, int(hold_s * self.sample_rate)))
        parts = [synth.get_samples(hold)]
        synth.noteoff(0, pitch)
        if n_samples > hold:
            parts.append(synth.get_samples(n_samples - hold))
        # Reset so that no tail bleeds into the next note.
        synth.system_reset()
        synth.get_samples(256)
        stereo = np.concatenate(parts).astype(np.float32).reshape(-1, 2) / 32768.0
        return stereo.mean(axis=1)


_worker_renderers: dict[tuple, NoteRenderer] = {}


def _render_chunk(args: tuple) -> list[tuple[dict, np.ndarray | None]]:
    soundfont, sample_rate, n_samples, notes = args
    # One synth per worker process: loading a 141 MB soundfont costs more than a chunk of notes.
    key = (soundfont, sample_rate)
    if key not in _worker_renderers:
        _worker_renderers[key] = NoteRenderer(Path(soundfont), sample_rate)
    renderer = _worker_renderers[key]
    out = []
    for note in notes:
        wave = renderer.render(note["program"], note["pitch"], note["velocity"], note["hold_s"],
                               n_samples, note["bank"])
        out.append((note, None if is_silent(wave) else wave))
    return out


def is_silent(wave: np.ndarray, window: int = 4096) -> bool:
    """True when even the loudest window is below SILENCE_DBFS (RMS)."""
    frames = wave[: len(wave) // window * window].reshape(-1, window)
    loudest = float(np.sqrt((frames ** 2).mean(axis=1)).max()) if len(frames) else 0.0
    return 20 * np.log10(loudest + 1e-12) < SILENCE_DBFS


def render_dataset(preset: str | dict, out: Path, soundfont: str | None = None, sample_rate: int = 22050,
                   workers: int | None = None, progress: bool = True) -> dict:
    """Render every note of a preset (a name in PRESETS, or a preset dict) into a dataset folder.

    Returns the dataset's meta.
    """
    from tqdm import tqdm

    if isinstance(preset, dict):
        spec, preset = preset, preset.get("name", "custom")
    elif preset in PRESETS:
        spec = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    sf_path = find_soundfont(soundfont or spec["soundfont"])
    spectral = SpectralConfig(sample_rate=sample_rate, f_max=min(SpectralConfig.f_max, sample_rate / 2))
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    plan = note_plan(spec)
    workers = workers or min(4, os.cpu_count() or 1)
    chunks = [plan[i::workers * 4] for i in range(workers * 4)]
    started = time.perf_counter()
    rows, silent = [], []
    bar = tqdm(total=len(plan), desc=f"render {preset}", unit="note", disable=not progress)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = [(str(sf_path), sample_rate, spectral.n_samples, chunk) for chunk in chunks if chunk]
        for results in pool.map(_render_chunk, jobs):
            for note, wave in results:
                bar.update()
                name = f"{note['style']}_{note['pitch']:03d}_v{note['velocity']:03d}.wav"
                if wave is None:
                    silent.append(name)
                    continue
                dataset.write_wav(out / "audio" / name, wave, sample_rate)
                rows.append(dataset.note_row(name, note["pitch"], note["style"], note["velocity"],
                                             dynamic_name(note["velocity"]), sf_path.name,
                                             note["program"]))
    bar.close()
    elapsed = time.perf_counter() - started
    if silent:
        log.warning("left out %d silent renders (no sample at that pitch)", len(silent))
    meta = {
        "kind": "soundfont",
        "preset": preset,
        "soundfont": str(sf_path),
        "sample_rate": sample_rate,
        "spectral": spectral.to_dict(),
        "style_order": list(spec["styles"]),
        "programs": {name: s["program"] for name, s in spec["styles"].items()},
        "skipped": {"silent": len(silent)},
        "skipped_files": silent,
        "render_seconds": round(elapsed, 1),
    }
    if not rows:
        raise ValueError(f"every note of {preset} rendered silent from {sf_path}")
    meta = dataset.write_dataset(out, rows, meta)
    log.info("rendered %d notes (%d silent left out) in %.1f s", len(rows), len(silent), elapsed)
    return meta
