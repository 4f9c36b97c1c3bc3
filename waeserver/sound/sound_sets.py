"""The study's sound sets: what a model's notes sound like, as Ogg Vorbis files to play in the report.

For one model (a bundle, or a training run, which has no real-time inverter) and its dataset,
``sound_sets`` writes into ``REPORT/sounds/NAME/``:

    recon-STYLE-recording.ogg, recon-STYLE-<inverter>.ogg
        one test note per style: the recording, then its reconstruction (the note's own z,
        pitch, velocity and style) through Griffin-Lim and the real-time inverter
    gen-STYLE-oct34.ogg, gen-STYLE-full.ogg
        four notes (by default) per style from prior z, random pitch (octaves 3-4, then the dataset's whole
        range, as in the study's generation metrics) and velocity, through the real-time inverter
    mix-A-B.ogg
        the same z and pitches as A, as "0.5 A + 0.5 B", then as B

Notes in one file follow each other after a short silence; each file is scaled to one peak
level (0.9), so the sets are heard at one loudness and levels compare only inside a file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from waeserver.data.dataset import NoteDataset, fit_length
from waeserver.dsp.pitch import midi_to_hz, note_name
from waeserver.dsp.spectral import SpectralConfig, griffin_lim, mel_to_linear
from waeserver.sound.bundle import load_bundle

GRIFFIN_LIM = "Griffin-Lim"
GAP_S = 0.15
PEAK = 0.9
NOTES_PER_SET = 4
# the study's own examples first; a dataset with neither pair gets its first two styles mixed
MIX_PAIRS = (("pizzicato", "tremolo"), ("clarinet", "violin"))
VELOCITIES = (40, 80, 120)


@dataclass
class Voice:
    """A model as the sound sets play it.

    ``decode(z [B,D], pitch [B] int64, style [B,S], velocity [B] 0..1) -> log-mel [B,M,F]``;
    ``encode(log-mel [B,M,F]) -> z [B,D]``; each inverter ``(log-mel [B,M,F], pitch [B]) -> [B,T]``,
    keyed by the label the page shows (Griffin-Lim first).
    """

    decode: Callable
    encode: Callable | None
    inverters: dict[str, Callable]
    spectral: SpectralConfig
    styles: list[str]
    latent: int
    realtime: str | None = None   # the label of the real-time inverter, None for a training run
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def load_voice(path: str | Path, device: torch.device) -> Voice:
    """A bundle (``card.yaml``) with Griffin-Lim and its own real-time inverter, or a training
    run (``model.yaml``) with Griffin-Lim only."""
    path = Path(path)
    if (path / "card.yaml").is_file() and not (path / "model.yaml").is_file():
        bundle = load_bundle(path, device)
        label = f"{bundle.default_inverter} (real-time)"
        inverters = {GRIFFIN_LIM: _griffin_lim(bundle.spectral),
                     label: lambda mel, pitch: bundle.inverter(mel, midi_to_hz(pitch.float()))}
        return Voice(bundle.decoder, bundle.encoder, inverters, bundle.spectral, bundle.styles,
                     bundle.latent_size, label, bundle.device)
    from waeserver.model.training import load_wae

    wae, meta = load_wae(path, device)
    spectral = SpectralConfig.from_dict(meta["spectral"])
    return Voice(wae.decoder, wae.encoder, {GRIFFIN_LIM: _griffin_lim(spectral)}, spectral,
                 list(meta["styles"]), wae.cfg.latent, None, device)


def _griffin_lim(spectral: SpectralConfig) -> Callable:
    return lambda mel, pitch: griffin_lim(mel_to_linear(mel, spectral), spectral, n_iter=100)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _write_ogg(path: Path, notes: np.ndarray, rate: int) -> None:
    """Notes ``[K, T]`` one after another with a gap, scaled to :data:`PEAK`, as Ogg Vorbis."""
    gap = np.zeros((len(notes), int(GAP_S * rate)), np.float32)
    wave = np.concatenate([notes, gap], axis=1).reshape(-1)[: -gap.shape[1] or None]
    peak = float(np.abs(wave).max())
    if peak > 0:
        wave = wave * (PEAK / peak)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), rate, format="OGG", subtype="VORBIS")


@torch.no_grad()
def _render(voice: Voice, inverter: str, z, pitch, style, velocity) -> np.ndarray:
    """``[K]`` notes from their inputs (z ``[K,D]``, style ``[K,S]``, velocity MIDI) -> ``[K, T]``."""
    d = voice.device
    pitch = torch.as_tensor(pitch, dtype=torch.int64, device=d)
    mel = voice.decode(torch.as_tensor(z, dtype=torch.float32, device=d), pitch,
                       torch.as_tensor(style, dtype=torch.float32, device=d),
                       torch.as_tensor(velocity, dtype=torch.float32, device=d) / 127)
    return voice.inverters[inverter](mel, pitch).float().cpu().numpy()


def _one_hot(style: int, n: int, count: int) -> np.ndarray:
    out = np.zeros((count, n), np.float32)
    out[:, style] = 1.0
    return out


def reconstructions(voice: Voice, ds: NoteDataset, out: Path, rel: Path, seed: int) -> list[dict]:
    """One test note per style: the recording and its reconstruction through each inverter."""
    if voice.encode is None:
        return []
    rng = np.random.default_rng(seed)
    test, labels = ds.indices("test"), ds.labels(ds.indices("test"))
    feats = np.asarray(ds.features())
    rows = []
    for s, style in enumerate(ds.styles):
        mine = test[labels["style"] == s]
        if not len(mine):
            continue
        i = int(rng.choice(mine))
        row = ds.rows[i]
        files = {"recording": rel / f"recon-{slug(style)}-recording.ogg"}
        _write_ogg(out / files["recording"], fit_length(ds.audio(i), ds.spectral.n_samples)[None], ds.sample_rate)
        with torch.no_grad():
            z = voice.encode(torch.from_numpy(np.array(feats[i:i + 1])).to(voice.device))
        for inverter in voice.inverters:
            wave = _render(voice, inverter, z, [row["pitch"]], _one_hot(s, len(ds.styles), 1), [row["velocity"]])
            files[inverter] = rel / f"recon-{slug(style)}-{slug(inverter.split(' ')[0])}.ogg"
            _write_ogg(out / files[inverter], wave, ds.sample_rate)
        rows.append({"style": style, "note": f"{note_name(row['pitch'])} v{row['velocity']} ({row['file']})",
                     "files": files})
    return rows


def generations(voice: Voice, ds: NoteDataset, out: Path, rel: Path, seed: int,
                notes: int = NOTES_PER_SET) -> list[dict]:
    """Per style, ``notes`` from prior z at random pitches in octaves 3-4 and over the dataset's range."""
    pitches = [r["pitch"] for r in ds.rows]
    ranges = {"octaves 3-4": ("oct34", 48, 71), "full range": ("full", min(pitches), max(pitches))}
    inverter = voice.realtime or GRIFFIN_LIM
    gen = torch.Generator().manual_seed(seed + 11)
    rows = []
    for s, style in enumerate(ds.styles):
        row = {"style": style, "files": {}, "notes": {}}
        for label, (tag, low, high) in ranges.items():
            pitch = torch.randint(low, high + 1, (notes,), generator=gen)
            vel = torch.tensor(VELOCITIES)[torch.randint(0, len(VELOCITIES), (notes,), generator=gen)]
            z = torch.randn(notes, voice.latent, generator=gen)
            wave = _render(voice, inverter, z, pitch, _one_hot(s, len(ds.styles), notes), vel)
            row["files"][label] = rel / f"gen-{slug(style)}-{tag}.ogg"
            row["notes"][label] = " ".join(f"{note_name(p)} v{v}" for p, v in zip(pitch.tolist(), vel.tolist()))
            _write_ogg(out / row["files"][label], wave, ds.sample_rate)
        rows.append(row)
    return rows


def mix_pairs(styles: list[str]) -> list[tuple[str, str]]:
    """The study's example pairs this style list has, else its first two styles."""
    pairs = [p for p in MIX_PAIRS if p[0] in styles and p[1] in styles]
    return pairs or ([(styles[0], styles[1])] if len(styles) > 1 else [])


def mixes(voice: Voice, ds: NoteDataset, out: Path, rel: Path, seed: int) -> list[dict]:
    """For each pair A, B: two pitches both styles play, each as A, as 0.5 A + 0.5 B, then as B."""
    inverter = voice.realtime or GRIFFIN_LIM
    gen = torch.Generator().manual_seed(seed + 23)
    rows = []
    for a, b in mix_pairs(ds.styles):
        ia, ib = ds.styles.index(a), ds.styles.index(b)
        shared = sorted({r["pitch"] for r in ds.rows if r["style"] == a} & {r["pitch"] for r in ds.rows
                                                                           if r["style"] == b})
        chosen = [shared[len(shared) // 3], shared[2 * len(shared) // 3]] if shared else [60, 67]
        weights = np.zeros((3, len(ds.styles)), np.float32)
        weights[0, ia] = weights[2, ib] = 1.0
        weights[1, ia] = weights[1, ib] = 0.5
        z = torch.randn(1, voice.latent, generator=gen).repeat(3 * len(chosen), 1)
        pitch = np.repeat(chosen, 3)
        wave = _render(voice, inverter, z, pitch, np.tile(weights, (len(chosen), 1)), np.full(len(pitch), 80))
        path = rel / f"mix-{slug(a)}-{slug(b)}.ogg"
        _write_ogg(out / path, wave, ds.sample_rate)
        rows.append({"label": f"0.5 {a} + 0.5 {b}", "file": path,
                     "notes": f"{', '.join(note_name(p) for p in chosen)} v80, each as {a}, as the mix, as {b}"})
    return rows


def sound_sets(voice: Voice, ds: NoteDataset, out: str | Path, name: str, seed: int = 0,
               notes: int = NOTES_PER_SET) -> dict:
    """Write every set for one model under ``out/sounds/NAME/``, ``notes`` per generated set;
    returns them with paths relative to ``out``."""
    out, rel = Path(out), Path("sounds") / slug(name)
    return {"reconstruction": reconstructions(voice, ds, out, rel, seed),
            "generation": generations(voice, ds, out, rel, seed, notes),
            "mixes": mixes(voice, ds, out, rel, seed),
            "inverters": list(voice.inverters), "generated_with": voice.realtime or GRIFFIN_LIM}
