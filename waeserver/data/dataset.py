"""Labelled note datasets on disk: manifest, split, cached log-mel features.

A dataset folder holds::

    dataset.yaml    what it is: sample rate, spectral settings, styles, how it was made, what was left out
    manifest.csv    one row per note: file, pitch, pitch_class, octave, style, velocity, dynamics,
                    source, program, pitch_estimated, split
    audio/*.wav     mono notes of exactly ``spectral.n_samples`` samples
    features.npy    log-mels ``[N, n_mels, n_frames]`` (float32), computed once and cached
    features.yaml   the spectral settings and manifest digest the cache was made with
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from waeserver.dsp.pitch import octave_of, pitch_class
from waeserver.dsp.spectral import MelSpectrogram, SpectralConfig
from waeserver.settings import read_mapping, read_yaml

log = logging.getLogger(__name__)

COLUMNS = ["file", "pitch", "pitch_class", "octave", "style", "velocity", "dynamics",
           "source", "program", "pitch_estimated", "split"]
SPLITS = ("train", "valid", "test")


class DatasetError(ValueError):
    """A dataset folder that cannot be used, with the reason."""


def note_row(file: str, pitch: int, style: str, velocity: int, dynamics: str, source: str,
             program: int | str = "", pitch_estimated: bool = False) -> dict:
    return {"file": file, "pitch": int(pitch), "pitch_class": pitch_class(int(pitch)),
            "octave": octave_of(int(pitch)), "style": style, "velocity": int(velocity),
            "dynamics": dynamics, "source": source, "program": program,
            "pitch_estimated": int(bool(pitch_estimated)), "split": ""}


def assign_splits(rows: list[dict], valid: float = 0.1, test: float = 0.1) -> None:
    """Deterministic split stratified by (style, octave), in place.

    Within each stratum, notes are ordered by a hash of their file name; the first ones go to
    test, the next to valid. Strata of fewer than 3 notes stay in train.
    """
    strata: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        strata[(row["style"], row["octave"])].append(row)
    for members in strata.values():
        members.sort(key=lambda r: hashlib.sha1(r["file"].encode()).hexdigest())
        n = len(members)
        n_test = max(1, round(n * test)) if n >= 3 else 0
        n_valid = max(1, round(n * valid)) if n >= 3 else 0
        for i, row in enumerate(members):
            row["split"] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"


def write_dataset(out: Path, rows: list[dict], meta: dict) -> dict:
    """Split, then write manifest.csv and dataset.yaml (audio is already in out/audio); returns the meta."""
    assign_splits(rows)
    rows.sort(key=lambda r: r["file"])
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    meta = dict(meta)
    present = {r["style"] for r in rows}
    order = [s for s in meta.pop("style_order", []) if s in present]
    meta["styles"] = order + sorted(present - set(order))
    meta["n_notes"] = len(rows)
    with open(out / "dataset.yaml", "w") as fh:
        yaml.safe_dump(meta, fh, sort_keys=False)
    return meta


class NoteDataset:
    """A dataset folder, read back: rows, styles, spectral settings, features."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "dataset.yaml"
        if not meta_path.is_file():
            raise DatasetError(f"{self.root} is not a dataset: no dataset.yaml")
        try:
            self.meta = read_mapping(meta_path, "dataset description", DatasetError)
            self.spectral = SpectralConfig.from_dict(self.meta["spectral"])
            self.styles: list[str] = list(self.meta["styles"])
            with open(self.root / "manifest.csv", newline="") as fh:
                self.rows = [self._parse(r) for r in csv.DictReader(fh)]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{self.root}: unreadable dataset ({exc})") from exc
        unknown = {r["style"] for r in self.rows} - set(self.styles)
        if unknown:
            raise DatasetError(f"{self.root}: manifest styles not in dataset.yaml: {sorted(unknown)}")

    @staticmethod
    def _parse(row: dict) -> dict:
        for key in ("pitch", "pitch_class", "octave", "velocity", "pitch_estimated"):
            row[key] = int(row[key])
        return row

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def sample_rate(self) -> int:
        return self.spectral.sample_rate

    def style_index(self, name: str) -> int:
        return self.styles.index(name)

    def indices(self, split: str | None = None) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.rows) if split is None or r["split"] == split],
                        dtype=np.int64)

    def audio(self, i: int) -> np.ndarray:
        wave, _ = sf.read(self.root / "audio" / self.rows[i]["file"], dtype="float32")
        return wave

    def _digest(self) -> str:
        return hashlib.sha1((self.root / "manifest.csv").read_bytes()).hexdigest()

    def features(self, batch: int = 64) -> np.ndarray:
        """Log-mels of every note ``[N, n_mels, n_frames]``; computed on first use, then cached."""
        cache, stamp_path = self.root / "features.npy", self.root / "features.yaml"
        stamp = {"spectral": self.spectral.to_dict(), "manifest_sha1": self._digest()}
        if cache.is_file() and stamp_path.is_file():
            try:
                stamped = read_yaml(stamp_path, "feature stamp")
            except ValueError:   # damaged: the features are made again
                stamped = None
            if stamped == stamp:
                return np.load(cache, mmap_mode="r")
        import torch
        from tqdm import tqdm

        mel = MelSpectrogram(self.spectral)
        out = np.zeros((len(self), self.spectral.n_mels, self.spectral.n_frames), dtype=np.float32)
        for start in tqdm(range(0, len(self), batch), desc="log-mel features", unit="batch",
                          disable=len(self) < 4 * batch):
            waves = np.stack([self.audio(i) for i in range(start, min(start + batch, len(self)))])
            with torch.no_grad():
                out[start:start + len(waves)] = mel(torch.from_numpy(waves)).numpy()
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(cache)
        stamp_path.write_text(yaml.safe_dump(stamp))
        return out

    def labels(self, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Integer labels: pitch, pitch_class, octave, style (index), velocity."""
        rows = self.rows if indices is None else [self.rows[i] for i in indices]
        return {
            "pitch": np.array([r["pitch"] for r in rows], dtype=np.int64),
            "pitch_class": np.array([r["pitch_class"] for r in rows], dtype=np.int64),
            "octave": np.array([r["octave"] for r in rows], dtype=np.int64),
            "style": np.array([self.styles.index(r["style"]) for r in rows], dtype=np.int64),
            "velocity": np.array([r["velocity"] for r in rows], dtype=np.int64),
        }

    def counts(self) -> dict[str, dict]:
        return {
            "split": dict(Counter(r["split"] for r in self.rows)),
            "style": {s: sum(r["style"] == s for r in self.rows) for s in self.styles},
            "octave": dict(sorted(Counter(r["octave"] for r in self.rows).items())),
            "pitch_class": dict(sorted(Counter(r["pitch_class"] for r in self.rows).items())),
            "dynamics": dict(Counter(r["dynamics"] for r in self.rows)),
            "pitch_estimated": sum(r["pitch_estimated"] for r in self.rows),
        }


def info_text(ds: NoteDataset) -> str:
    """The human summary printed by ``waeserver dataset info``."""
    counts = ds.counts()
    sr = ds.sample_rate
    lines = [
        f"dataset      {ds.root}",
        f"made by      {ds.meta.get('kind', '?')}: {ds.meta.get('preset') or ds.meta.get('source', '')}",
        f"notes        {len(ds)} ({len(ds) * ds.spectral.n_samples / sr / 60:.1f} min of audio)",
        f"sample rate  {sr} Hz, {ds.spectral.n_samples} samples a note "
        f"({ds.spectral.n_samples / sr:.3f} s, {ds.spectral.n_frames} frames of {ds.spectral.n_mels} mels)",
        "split        " + ", ".join(f"{s} {counts['split'].get(s, 0)}" for s in SPLITS),
    ]
    skipped = ds.meta.get("skipped", {})
    if skipped:
        lines.append("left out     " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    by_split = defaultdict(Counter)
    for r in ds.rows:
        by_split[r["style"]][r["split"]] += 1
    lines.append("")
    lines.append(f"{'style':<16}{'notes':>7}{'train':>7}{'valid':>7}{'test':>7}")
    for s in ds.styles:
        lines.append(f"{s:<16}{counts['style'][s]:>7}" + "".join(f"{by_split[s][x]:>7}" for x in SPLITS))
    lines.append("")
    lines.append("octave       " + "  ".join(f"{k}:{v}" for k, v in counts["octave"].items()))
    lines.append("pitch class  " + "  ".join(f"{k}:{v}" for k, v in counts["pitch_class"].items()))
    lines.append("dynamics     " + "  ".join(f"{k}:{v}" for k, v in counts["dynamics"].items()))
    if counts["pitch_estimated"]:
        lines.append(f"pitch estimated from audio for {counts['pitch_estimated']} notes")
    return "\n".join(lines)


def plot_examples(ds: NoteDataset, path: Path, per_style: int = 4) -> Path:
    """A PNG grid: one row per style, a few log-mels each, spread over the style's pitch range."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = ds.features()
    fig, axes = plt.subplots(len(ds.styles), per_style, figsize=(2.2 * per_style, 1.8 * len(ds.styles)),
                             squeeze=False)
    for r, style in enumerate(ds.styles):
        members = sorted((i for i, row in enumerate(ds.rows) if row["style"] == style),
                         key=lambda i: (ds.rows[i]["pitch"], ds.rows[i]["velocity"]))
        picks = [members[int(k)] for k in np.linspace(0, len(members) - 1, per_style)] if members else []
        for c in range(per_style):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(picks):
                row = ds.rows[picks[c]]
                ax.imshow(feats[picks[c]], origin="lower", aspect="auto", cmap="magma")
                ax.set_title(f"{row['pitch']} v{row['velocity']}", fontsize=7)
            if c == 0:
                ax.set_ylabel(style, fontsize=8)
    fig.suptitle(f"{ds.root.name}: log-mel examples per style", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to exactly n samples, with a 10 ms fade where it was cut."""
    wave = np.asarray(wave, dtype=np.float32)
    if len(wave) >= n:
        wave = wave[:n].copy()
        fade = min(n, 220)
        wave[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        return wave
    return np.pad(wave, (0, n - len(wave)))


def write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    sf.write(path, wave, sample_rate, subtype="PCM_16")
