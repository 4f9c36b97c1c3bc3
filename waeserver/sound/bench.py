"""``waeserver bench``: speed and quality of a bundle on this machine, every inverter side by side.

Speed, for each device (CPU with 1 and with 2 threads, and CUDA when present), warm, medians over
repeats, timed in one run: milliseconds for one note (batch of one) by the decoder and by each of
the bundle's real-time inverters apart, decoder and default inverter together, notes per second
when batched, the real-time factor (compute time over note duration), and each inverter against
100-iteration Griffin-Lim on the same note.

Quality, on the test split of the bundle's dataset (the card's ``training_data.path``, or
``--data``): against the real recordings, spectral convergence, log-spectral distance (dB) and the
multi-resolution STFT distance (the training loss: SC plus log-magnitude L1 at three
resolutions) of the real log-mels inverted by Griffin-Lim and by each inverter, and of the whole
model (encoder, decoder, default inverter) when the bundle carries the encoder; with ``judges``
(the study's attribute classifiers), their accuracy on log-mels recomputed from each path's
audio, the recordings' own included. And the pitch of generated notes (octaves 3 to 5, every
style, z from the prior) by the independent YIN tracker of :mod:`waeserver.dsp.pitch`.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from waeserver.dsp.pitch import midi_to_f0
from waeserver.dsp.spectral import (
    griffin_lim,
    log_spectral_distance,
    mel_to_linear,
    spectral_convergence,
    stft_magnitude,
)
from waeserver.model.wae import style_onehot
from waeserver.sound.bundle import MODELS_DIR, Bundle, BundleError, load_bundle

log = logging.getLogger(__name__)

GLA_ITERATIONS = 100
PITCH_TOLERANCE_CENTS = 50.0
PITCH_OCTAVES = (3, 5)


def _timed(fn, device: torch.device, repeats: int, warmup: int = 3) -> list[float]:
    """Wall milliseconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(1000 * (time.perf_counter() - start))
    return times


def _summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"median": round(statistics.median(ordered), 3),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
            "min": round(ordered[0], 3)}


def note_inputs(bundle: Bundle, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``batch`` notes spread over the bundle's range and styles, z from the prior."""
    gen = torch.Generator().manual_seed(seed)
    low, high = bundle.pitch_range
    pitch = torch.linspace(max(low, 48), min(high, 84), batch).round().long()
    style = style_onehot(torch.arange(batch) % len(bundle.styles), len(bundle.styles))
    velocity = torch.full((batch,), 100 / 127)
    return pitch, velocity, style, torch.randn(batch, bundle.latent_size, generator=gen)


@torch.no_grad()
def speed(bundle: Bundle, repeats: int = 50, batch: int = 32, gla_repeats: int = 3) -> dict:
    """Speed figures of one loaded bundle on its own device (and the current thread count)."""
    dev = bundle.device
    pitch, velocity, style, z = (t.to(dev) for t in note_inputs(bundle, 1))
    mel = bundle.decoder(z, pitch, style, velocity)
    f0 = midi_to_f0(pitch)
    decoder_ms = _timed(lambda: bundle.decoder(z, pitch, style, velocity), dev, repeats)
    inverter_ms = {name: _timed(lambda inv=inv: inv(mel, f0), dev, repeats) for name, inv in bundle.inverters.items()}
    note_ms = _timed(lambda: bundle.synthesize(pitch, velocity, style, z), dev, repeats)
    gla_ms = _timed(lambda: griffin_lim(mel_to_linear(mel, bundle.spectral), bundle.spectral,
                                        n_iter=GLA_ITERATIONS), dev, gla_repeats, warmup=1)
    many = tuple(t.to(dev) for t in note_inputs(bundle, batch))
    batch_ms = _timed(lambda: bundle.synthesize(*many), dev, max(3, repeats // 5))
    duration = bundle.n_samples / bundle.sample_rate
    note = statistics.median(note_ms)
    gla = statistics.median(gla_ms)
    return {
        "device": str(dev),
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "note_seconds": round(duration, 4),
        "inverter": bundle.default_inverter,
        "decoder_ms": _summary(decoder_ms),
        "inverters_ms": {name: _summary(t) for name, t in inverter_ms.items()},
        "note_ms": _summary(note_ms),
        "batch": batch,
        "notes_per_second_batched": round(batch / (statistics.median(batch_ms) / 1000), 1),
        "real_time_factor": round(note / 1000 / duration, 5),
        "gla_ms": _summary(gla_ms),
        "speedup_over_gla": {name: round(gla / statistics.median(t), 1) for name, t in inverter_ms.items()},
    }


def test_notes(ds, max_notes: int | None) -> np.ndarray:
    """The test split, or ``max_notes`` of it spread evenly (styles and octaves stay mixed)."""
    test = ds.indices("test")
    if max_notes is None or max_notes >= len(test):
        return test
    return test[np.linspace(0, len(test) - 1, max_notes).round().astype(int)]


@torch.no_grad()
def inversion_quality(bundle: Bundle, data_dir: str | Path, max_notes: int | None = 48, batch: int = 16,
                      judges=None) -> dict:
    """Against the real audio of test notes: SC, LSD and multi-resolution STFT distance of Griffin-Lim
    and of each inverter on the real log-mels, and of the whole model (encoder -> decoder -> default
    inverter) when the bundle has the encoder; with ``judges``, their accuracy on every path's audio."""
    from waeserver.data.dataset import NoteDataset
    from waeserver.dsp.spectral import MelSpectrogram
    from waeserver.dsp.stft_loss import MultiResolutionSTFTLoss

    ds = NoteDataset(data_dir)
    if ds.spectral != bundle.spectral:
        raise BundleError(f"{ds.root} has other spectral settings than {bundle.name}")
    picks = test_notes(ds, max_notes)
    feats = ds.features()
    labels = ds.labels(picks)
    dev = bundle.device
    to_mel = MelSpectrogram(ds.spectral).to(dev)
    distance = MultiResolutionSTFTLoss().to(dev)
    scores: dict[str, dict[str, list]] = {}
    heard: dict[str, dict[str, list]] = {}

    def judge(name: str, wave: torch.Tensor, s: int) -> None:
        if judges is not None:
            from waeserver.model.evaluation import classify

            predicted = classify(judges, to_mel(wave))
            for attribute, values in predicted.items():
                heard.setdefault(name, {}).setdefault(attribute, []).append(
                    values == labels[attribute][s:s + len(wave)])
            heard[name].setdefault("named_as", []).append(predicted["style"])

    for s in range(0, len(picks), batch):
        idx = picks[s:s + batch]
        mel = torch.from_numpy(np.ascontiguousarray(feats[idx])).to(dev)
        real = torch.from_numpy(np.stack([ds.audio(int(i)) for i in idx])).to(dev)
        pitch = torch.from_numpy(labels["pitch"][s:s + batch]).to(dev)
        true_mag = stft_magnitude(real, ds.spectral)
        outputs = {"gla": griffin_lim(mel_to_linear(mel, ds.spectral), ds.spectral, n_iter=GLA_ITERATIONS)}
        outputs.update({name: inv(mel, midi_to_f0(pitch)) for name, inv in bundle.inverters.items()})
        style_names = [ds.rows[int(i)]["style"] for i in idx]
        if bundle.encoder is not None and all(n in bundle.styles for n in style_names):
            style = torch.stack([bundle.style_weights({n: 1.0}) for n in style_names]).to(dev)
            velocity = torch.from_numpy(labels["velocity"][s:s + batch]).float().div(127).to(dev)
            outputs["model"] = bundle.synthesize(pitch, velocity, style, bundle.encoder(mel))
        judge("recording", real, s)
        for name, wave in outputs.items():
            mag = stft_magnitude(wave, ds.spectral)
            part = scores.setdefault(name, {"sc": [], "lsd_db": [], "mrstft": []})
            part["sc"].append(spectral_convergence(mag, true_mag))
            part["lsd_db"].append(log_spectral_distance(mag, true_mag))
            part["mrstft"].append(torch.stack([distance(wave[i:i + 1], real[i:i + 1])[0]
                                               for i in range(len(wave))]))
            judge(name, wave, s)
    result = {"data": str(ds.root), "notes": int(len(picks)), "inverter": bundle.default_inverter}
    for name, parts in scores.items():
        result[name] = {k: round(float(torch.cat(v).mean()), 4) for k, v in parts.items()}
    if judges is not None:
        truth = labels["style"]
        result["judges"] = {}
        for name, per in heard.items():
            named = np.concatenate(per.pop("named_as"))
            result["judges"][name] = {k: round(float(np.mean(np.concatenate(v))), 4) for k, v in per.items()}
            # per style: how often the judges name it right, and what they take it for otherwise
            result["judges"][name]["per_style"] = {
                style: {"right": round(float(np.mean(named[truth == k] == k)), 3),
                        "taken_for": sorted({ds.styles[int(j)] for j in named[truth == k] if j != k})}
                for k, style in enumerate(ds.styles) if np.any(truth == k)}
    return result


def recorded_pitches(data_dir: str | Path, jobs: list[tuple[str, int]], velocity: int = 100) -> dict:
    """What YIN reads off the dataset's own recording of each ``(style, pitch)`` of ``jobs`` that it
    has (the one nearest ``velocity``): Hz, or None when it finds no pitch."""
    from waeserver.data.dataset import NoteDataset
    from waeserver.dsp.pitch import estimate_pitch

    ds = NoteDataset(data_dir)
    nearest: dict[tuple[str, int], int] = {}
    for i, row in enumerate(ds.rows):
        key = (row["style"], row["pitch"])
        if key in nearest and abs(ds.rows[nearest[key]]["velocity"] - velocity) <= abs(row["velocity"] - velocity):
            continue
        nearest[key] = i
    found = {}
    for key in jobs:
        if key in nearest:
            est = estimate_pitch(ds.audio(nearest[key]), ds.spectral.sample_rate)
            found[key] = est.hz if est is not None else None
    return found


@torch.no_grad()
def pitch_accuracy(bundle: Bundle, seed: int = 0, batch: int = 32, data: str | Path | None = None) -> dict:
    """Generated notes of every style over octaves 3..5 (within each style's range), z from the
    prior, checked by YIN: the fraction within 50 cents of the requested pitch. With the bundle's
    dataset (``data``), also what YIN reads off the recordings of the same styles and pitches: the
    fraction of those within 50 cents of their pitch (the tracker's ceiling on this data: a
    soundfont sample with a weak fundamental reads an octave up), and of the generated notes within
    50 cents of their recording's reading (those it found a pitch in)."""
    from waeserver.dsp.pitch import cents_off, estimate_pitch, hz_to_midi

    ranges = bundle.card.get("style_ranges") or {}
    low_all, high_all = bundle.pitch_range
    first, last = (PITCH_OCTAVES[0] + 1) * 12, (PITCH_OCTAVES[1] + 2) * 12 - 1
    jobs = []
    for k, name in enumerate(bundle.styles):
        low, high = ranges.get(name, (low_all, high_all))
        jobs += [(k, p) for p in range(max(first, low), min(last, high) + 1)]
    if not jobs:
        return {"notes": 0}
    gen = torch.Generator().manual_seed(seed)
    z_all = torch.randn(len(jobs), bundle.latent_size, generator=gen)
    found = []
    for s in range(0, len(jobs), batch):
        part = jobs[s:s + batch]
        pitch = torch.tensor([p for _, p in part])
        style = style_onehot(torch.tensor([k for k, _ in part]), len(bundle.styles))
        velocity = torch.full((len(part),), 100 / 127)
        waves = bundle.synthesize(pitch, velocity, style, z_all[s:s + len(part)]).cpu().numpy()
        for wave in waves:
            est = estimate_pitch(wave, bundle.sample_rate)
            found.append(est.hz if est is not None else None)

    def within(hz, pitch: float) -> bool:
        return hz is not None and abs(cents_off(hz, pitch)) <= PITCH_TOLERANCE_CENTS

    cents = np.array([abs(cents_off(hz, p)) if hz is not None else np.inf for hz, (_, p) in zip(found, jobs)])
    right = cents <= PITCH_TOLERANCE_CENTS
    per_style = {name: [0, 0] for name in bundle.styles}
    for ok, (k, _) in zip(right, jobs):
        per_style[bundle.styles[k]][0] += int(ok)
        per_style[bundle.styles[k]][1] += 1
    finite = cents[np.isfinite(cents)]
    result = {"notes": len(jobs), "octaves": list(PITCH_OCTAVES), "tolerance_cents": PITCH_TOLERANCE_CENTS,
              "within_tolerance": round(float(np.mean(right)), 4),
              "no_pitch_found": int(np.sum(~np.isfinite(cents))),
              "median_abs_cents": round(float(np.median(finite)), 2) if finite.size else None,
              "per_style": {n: round(ok / total, 3) for n, (ok, total) in per_style.items() if total}}
    if data is not None:
        keys = [(bundle.styles[k], p) for k, p in jobs]
        recorded = recorded_pitches(data, keys)
        heard = [(hz, recorded[key]) for hz, key in zip(found, keys) if recorded.get(key) is not None]
        result["recordings"] = len(recorded)
        result["recordings_within_tolerance"] = round(float(np.mean(
            [within(hz, pitch) for (_, pitch), hz in recorded.items()])), 4) if recorded else None
        result["within_tolerance_of_recordings"] = round(float(np.mean(
            [within(hz, hz_to_midi(rec)) for hz, rec in heard])), 4) if heard else None
    return result


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            # timings mean little on a busy machine: the load when they were taken goes with them
            "load_average": [round(v, 2) for v in os.getloadavg()]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def bench(model: str | Path | Bundle, devices: list[str] | None = None, data: str | Path | None = None,
          repeats: int = 50, quality: bool = True, threads: tuple[int, ...] = (1, 2),
          max_notes: int | None = 48, judges_dir: str | Path | None = None) -> dict:
    """Every figure of ``waeserver bench`` as a dict (CPU speed once per thread count, in one run).
    ``model`` may be a loaded bundle, measured on its own device."""
    loaded = model if isinstance(model, Bundle) else None
    devices = [str(loaded.device)] if loaded else devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    report: dict = {"machine": machine(), "speed": [], "model": None}
    first = None
    before = torch.get_num_threads()
    for name in devices:
        b = loaded or load_bundle(model, name)
        first = first or b
        report["model"] = b.name
        for count in (threads if b.device.type == "cpu" else (before,)):
            torch.set_num_threads(count)
            log.info("bench: speed of %s on %s, %d threads", b.name, b.device, count)
            report["speed"].append(speed(b, repeats))
        torch.set_num_threads(before)
    if quality:
        data = data or (first.card.get("training_data") or {}).get("path")
        if data and not Path(data).is_absolute() and not Path(data).is_dir():
            data = MODELS_DIR.parent / data   # cards give the repository-relative path
        if data and Path(data).is_dir():
            judges = None
            if judges_dir is not None:
                from waeserver.data.dataset import NoteDataset
                from waeserver.model.evaluation import load_or_train_classifiers

                Path(judges_dir).mkdir(parents=True, exist_ok=True)
                judges, accuracy = load_or_train_classifiers(NoteDataset(data), Path(judges_dir), first.device)
                report["judges_test_accuracy"] = accuracy
            log.info("bench: inversion quality on %s", data)
            report["quality"] = inversion_quality(first, data, max_notes=max_notes, judges=judges)
        else:
            report["quality"] = {"skipped": "no dataset (give --data DIR)"}
        log.info("bench: pitch of generated notes")
        report["pitch"] = pitch_accuracy(first, data=data if data and Path(data).is_dir() else None)
    return report


def format_report(report: dict) -> str:
    lines = [f"model {report['model']} on {report['machine'].get('cpu', report['machine']['processor'])}"
             + (f" / {report['machine']['gpu']}" if "gpu" in report["machine"] else "")
             + (f" (load average {report['machine']['load_average'][0]})"
                if report["machine"].get("load_average") else "")]
    for s in report["speed"]:
        threads = f", {s['threads']} threads" if s["threads"] else ""
        each = ", ".join(f"{k} {v['median']} ms" for k, v in s["inverters_ms"].items())
        faster = ", ".join(f"{k} {v}x" for k, v in s["speedup_over_gla"].items())
        lines += [f"[{s['device']}{threads}] one {s['note_seconds']} s note: decoder {s['decoder_ms']['median']} ms, "
                  f"inverters {each}; decoder + {s['inverter']} {s['note_ms']['median']} ms "
                  f"(p90 {s['note_ms']['p90']}), real-time factor {s['real_time_factor']}",
                  f"[{s['device']}{threads}] batched ({s['batch']}): {s['notes_per_second_batched']} notes/s; "
                  f"Griffin-Lim x{GLA_ITERATIONS} {s['gla_ms']['median']} ms; faster than it: {faster}"]
    q = report.get("quality", {})
    if "gla" in q:
        paths = [k for k in q if isinstance(q[k], dict) and "sc" in q[k]]
        lines.append(f"quality on {q['notes']} test notes: " + "; ".join(
            f"{k} SC {q[k]['sc']} LSD {q[k]['lsd_db']} dB MR-STFT {q[k]['mrstft']}" for k in paths))
        for path, acc in (q.get("judges") or {}).items():
            lines.append(f"judges on {path}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in acc.items()
                                                           if k != "per_style"))
    elif q:
        lines.append(f"quality: {q.get('skipped')}")
    p = report.get("pitch")
    if p and p.get("notes"):
        lines.append(f"pitch: {100 * p['within_tolerance']:.1f}% of {p['notes']} generated notes (octaves "
                     f"{p['octaves'][0]}-{p['octaves'][1]}) within {p['tolerance_cents']:.0f} cents, "
                     f"median error {p['median_abs_cents']} cents"
                     + (f"; the recordings of the same notes {100 * p['recordings_within_tolerance']:.1f}%, the "
                        f"generated notes within {p['tolerance_cents']:.0f} cents of their recording's pitch "
                        f"{100 * p['within_tolerance_of_recordings']:.1f}%"
                        if p.get("within_tolerance_of_recordings") is not None else ""))
    return "\n".join(lines)

