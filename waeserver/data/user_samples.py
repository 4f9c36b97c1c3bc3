"""Import a user's own folder of samples, with a tag file, as a dataset.

The tag file (YAML or CSV) maps file names or glob patterns to tags. ``style`` is the tag that
becomes a fader; ``pitch`` (a MIDI number or a note name) and ``velocity`` are optional. Later
rules override earlier ones, so a broad pattern can be refined by a narrower one::

    # tags.yaml
    files:
      "pizz/*": pizzicato                 # shorthand: pattern -> style
      "bowed/*": {style: arco, velocity: 90}
      "bowed/long_A4.wav": {pitch: A4}

    # tags.csv
    pattern,style,pitch,velocity
    pizz/*,pizzicato,,
    bowed/*,arco,,90

A pattern without a slash matches the file name alone; one with a slash matches the path
relative to the source folder. Without a pitch tag, a note name in the file name (C#4, Eb2, A4)
is used, else the pitch is estimated from the audio (YIN) and marked as estimated. Files that
cannot be read, are empty or silent, match no rule, or have no usable pitch are reported by name
and left out. The source folder is only ever read.
"""

from __future__ import annotations

import csv
import fnmatch
import logging
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

from waeserver.data import dataset
from waeserver.data.recipes import dynamic_name
from waeserver.dsp.pitch import estimate_pitch, pitch_from_name
from waeserver.dsp.resample import to_rate
from waeserver.dsp.spectral import SpectralConfig
from waeserver.settings import read_yaml

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = {".wav", ".flac", ".aif", ".aiff"}
TAG_KEYS = {"style", "pitch", "velocity"}
DEFAULT_VELOCITY = 100


class TagFileError(ValueError):
    """A tag file that cannot be used, with the reason."""


def _parse_pitch(value, where: str) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        pitch = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        pitch = int(value.strip())
    elif isinstance(value, str) and pitch_from_name(value.strip()) is not None \
            and len(value.strip()) <= 4:
        pitch = pitch_from_name(value.strip())
    else:
        raise TagFileError(f"{where}: pitch {value!r} is neither a MIDI number nor a note name")
    if not 0 <= pitch <= 127:
        raise TagFileError(f"{where}: pitch {pitch} is outside 0..127")
    return pitch


def _clean_tags(tags, where: str) -> dict:
    if isinstance(tags, str):
        tags = {"style": tags}
    if not isinstance(tags, dict):
        raise TagFileError(f"{where}: expected a style name or a mapping of tags, got {tags!r}")
    tags = {str(k): v for k, v in tags.items() if v not in (None, "")}
    unknown = set(tags) - TAG_KEYS - {"pattern", "file"}
    if unknown:
        raise TagFileError(f"{where}: unknown tags {sorted(unknown)} (known: {sorted(TAG_KEYS)})")
    out = {}
    if "style" in tags:
        style = str(tags["style"]).strip()
        if not style or any(c in style for c in ",=\n"):
            raise TagFileError(f"{where}: style {style!r} must be a non-empty name without , or =")
        out["style"] = style
    if "pitch" in tags:
        out["pitch"] = _parse_pitch(tags["pitch"], where)
    if "velocity" in tags:
        try:
            velocity = int(float(tags["velocity"]))
        except (TypeError, ValueError):
            raise TagFileError(f"{where}: velocity {tags['velocity']!r} is not a number") from None
        if not 1 <= velocity <= 127:
            raise TagFileError(f"{where}: velocity {velocity} is outside 1..127")
        out["velocity"] = velocity
    return out


def read_tag_file(path: Path) -> list[tuple[str, dict]]:
    """Rules ``(pattern, tags)`` in file order."""
    path = Path(path)
    rules: list[tuple[str, dict]] = []
    if path.suffix.lower() == ".csv":
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise TagFileError(f"cannot read tag file {path}: {exc}") from exc
        reader = csv.DictReader(text.splitlines())
        fields = set(reader.fieldnames or [])
        key = "pattern" if "pattern" in fields else "file" if "file" in fields else None
        if key is None:
            raise TagFileError(f"{path}: a CSV tag file needs a 'pattern' or 'file' column")
        for n, row in enumerate(reader, start=2):
            if not row.get(key):
                raise TagFileError(f"{path}:{n}: empty pattern")
            rules.append((row[key].strip(), _clean_tags({k: v for k, v in row.items() if k != key},
                                                         f"{path}:{n}")))
        return rules
    data = read_yaml(path, "tag file", TagFileError)
    entries = data.get("files") if isinstance(data, dict) and "files" in data else data
    if isinstance(entries, dict):
        for pattern, tags in entries.items():
            rules.append((str(pattern), _clean_tags(tags, f"{path}: {pattern}")))
    elif isinstance(entries, list):
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or not (entry.get("pattern") or entry.get("file")):
                raise TagFileError(f"{path}: entry {n} needs a 'pattern' (or 'file')")
            rules.append((str(entry.get("pattern") or entry.get("file")),
                          _clean_tags(entry, f"{path}: entry {n}")))
    else:
        raise TagFileError(f"{path}: expected a 'files' mapping or list of pattern rules")
    if not rules:
        raise TagFileError(f"{path}: no rules")
    return rules


def tags_for(relpath: str, rules: list[tuple[str, dict]]) -> dict:
    name = PurePosixPath(relpath).name
    tags: dict = {}
    for pattern, rule_tags in rules:
        target = relpath if "/" in pattern else name
        if fnmatch.fnmatchcase(target, pattern) or fnmatch.fnmatch(target.lower(), pattern.lower()):
            tags.update(rule_tags)
    return tags


def load_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Any readable WAV/FLAC/AIFF as mono float32 at ``sample_rate`` (the project's one resampler)."""
    wave, sr = sf.read(path, dtype="float32", always_2d=True)
    return to_rate(wave.mean(axis=1)[None], int(sr), int(sample_rate))[0]


def trim_leading_silence(wave: np.ndarray, threshold_db: float = -50.0) -> np.ndarray:
    peak = float(np.abs(wave).max())
    above = np.nonzero(np.abs(wave) > peak * 10 ** (threshold_db / 20))[0]
    start = max(0, int(above[0]) - 32) if above.size else 0
    return wave[start:]


def import_library(src: Path, tags_file: Path, out: Path, sample_rate: int = 22050,
                   progress: bool = True) -> dict:
    """Import ``src`` into ``out``; returns the dataset meta, whose ``rejected`` says what was left out."""
    from tqdm import tqdm

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"sample folder not found: {src}")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError("the output folder must be outside the sample folder")
    rules = read_tag_file(tags_file)
    spectral = SpectralConfig(sample_rate=sample_rate, f_max=min(SpectralConfig.f_max, sample_rate / 2))
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"no WAV, FLAC or AIFF files in {src}")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows, rejected = [], {}
    for i, path in enumerate(tqdm(files, desc="import", unit="file", disable=not progress)):
        rel = path.relative_to(src).as_posix()
        tags = tags_for(rel, rules)
        if "style" not in tags:
            rejected[rel] = "no tag rule gives it a style"
            continue
        try:
            wave = load_mono(path, sample_rate)
        except Exception as exc:  # soundfile raises several types for broken files
            rejected[rel] = f"unreadable ({exc})"
            continue
        if wave.size == 0 or not np.isfinite(wave).all() or float(np.abs(wave).max()) < 1e-4:
            rejected[rel] = "empty or silent"
            continue
        wave = dataset.fit_length(trim_leading_silence(wave), spectral.n_samples)
        estimated = False
        pitch = tags.get("pitch", pitch_from_name(path.stem))
        if pitch is None:
            est = estimate_pitch(wave, sample_rate)
            if est is None or not 0 <= round(est.midi) <= 127:
                rejected[rel] = "no pitch tag, no note name, and no clear pitch in the audio"
                continue
            pitch, estimated = int(round(est.midi)), True
        velocity = tags.get("velocity", DEFAULT_VELOCITY)
        name = f"{i:05d}_{tags['style']}_{pitch:03d}.wav"
        dataset.write_wav(out / "audio" / name, wave, sample_rate)
        rows.append(dataset.note_row(name, pitch, tags["style"], velocity, dynamic_name(velocity),
                                     rel, "", estimated))
    for rel, why in rejected.items():
        log.warning("left out %s: %s", rel, why)
    if not rows:
        raise ValueError(f"nothing imported from {src}: every file was left out")
    meta = {
        "kind": "library",
        "source": str(src.resolve()),
        "tags": str(Path(tags_file).resolve()),
        "sample_rate": sample_rate,
        "spectral": spectral.to_dict(),
        "skipped": {"rejected": len(rejected)},
        "rejected": rejected,
    }
    meta = dataset.write_dataset(out, rows, meta)
    return meta
