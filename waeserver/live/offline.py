"""``waeserver render SONG.mid``: the live engine on a virtual clock, into a WAV file.

The same :class:`~waeserver.live.instrument.Instrument` as ``serve`` (voices, cache, renderer, MIDI
parser, OSC address table) runs period by period; rendering takes no time on this clock: a note
whose render is not fresh is rendered just before its note-on, so every note sounds as the
performer meant it. Control changes come from an automation file, a YAML list of events::

    - {time: 0.0, address: /wae/mix, args: [piano, 1.0]}
    - [2.5, /wae/style, [flute, 0.8]]      # the same as a [time, address, args] triple

Every event goes through the OSC address table, so anything ``serve`` accepts works here and
a refused event stops the render with its ``/fail`` message. The result depends only on the
inputs and ``--seed`` (the per-note latent draws).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from waeserver.live.config import ServeConfig
from waeserver.settings import read_yaml

log = logging.getLogger(__name__)

PERIOD = 256
TAIL_S = 30.0    # longest time after the last event to let voices ring out


def read_song(path: Path) -> list[tuple[float, bytes]]:
    """``(seconds, message bytes)`` of every channel message of a MIDI file, in time order."""
    import mido

    try:
        song = mido.MidiFile(path)
        events, t = [], 0.0
        for msg in song:
            t += msg.time
            if not msg.is_meta and msg.type != "sysex":
                events.append((t, bytes(msg.bytes())))
    except OSError as exc:
        raise OSError(f"cannot read MIDI file {path}: {exc.strerror or exc}") from None
    except (ValueError, EOFError, KeyError, IndexError) as exc:
        raise ValueError(f"{path} is not a readable MIDI file ({exc or type(exc).__name__})") from None
    return events


def read_automation(path: Path) -> list[tuple[float, str, list]]:
    """The events of an automation file, checked for shape, in time order."""
    data = read_yaml(path, "automation")
    if isinstance(data, dict):
        if set(data) != {"events"}:
            raise ValueError(f"automation {path} must be a list of events (or a mapping with just 'events')")
        data = data["events"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError(f"automation {path} must be a list of events")
    events = []
    for i, item in enumerate(data, 1):
        if isinstance(item, dict):
            unknown = set(item) - {"time", "address", "args"}
            if unknown:
                raise ValueError(f"automation {path} event {i}: unknown key {sorted(unknown)[0]!r}")
            t, address, args = item.get("time"), item.get("address"), item.get("args", [])
        elif isinstance(item, list) and len(item) in (2, 3):
            t, address, args = item[0], item[1], item[2] if len(item) == 3 else []
        else:
            raise ValueError(f"automation {path} event {i}: expected {{time, address, args}} or [time, address, args]")
        if not isinstance(args, list):
            args = [args]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ValueError(f"automation {path} event {i}: time must be seconds >= 0, got {t!r}")
        if not isinstance(address, str) or not address.startswith("/"):
            raise ValueError(f"automation {path} event {i}: address must be an OSC address, got {address!r}")
        events.append((float(t), address, args))
    events.sort(key=lambda e: e[0])
    return events


def render_song(inst, commands, song: list[tuple[float, bytes]], automation: list[tuple[float, str, list]],
                rate: int) -> np.ndarray:
    """Play ``song`` with ``automation`` through ``inst`` on a virtual clock; mono ``[T]`` float32."""
    pool, renderer = inst.pool, inst.renderer
    last = max([t for t, _ in song] + [t for t, _, _ in automation] + [0.0])
    limit = int((last + TAIL_S) * rate)
    out = np.zeros(limit + PERIOD, np.float32)
    i_song = i_auto = 0
    frame = 0

    def ensure(pitch: int) -> None:
        cache = renderer.cache
        if cache.playable(pitch) and not (cache.is_fresh(pitch) and cache.whole[pitch]):
            renderer.render_now([pitch], priority=False)

    while frame < limit:
        end = frame + PERIOD
        while i_auto < len(automation) and automation[i_auto][0] * rate < end:
            t, address, args = automation[i_auto]
            replies = commands.apply(address, args)
            for reply, values in replies:
                if reply == "/fail":
                    raise ValueError(f"automation at {t:g} s: {address} refused: {values[1]}")
            i_auto += 1
        for action, pitch in pool.queued():   # automation notes start this period: render them now
            if action == "note_on":
                ensure(pitch)
        block = []
        while i_song < len(song) and song[i_song][0] * rate < end:
            t, data = song[i_song]
            if len(data) == 3 and data[0] & 0xF0 == 0x90 and data[2] > 0:
                ensure(data[1])
            block.append((max(0, int(round(t * rate)) - frame), "midi", (data,)))
            i_song += 1
        pool.run(out[frame:end], block)
        while inst.controls:
            inst.control(inst.controls.popleft())
        cache = renderer.cache
        if cache.has_requests():    # per-note draws used up, notes that found nothing: ready next period
            renderer.render_now(list(cache.pop_requests()), priority=False)   # whole, as every render here
        frame = end
        if i_song >= len(song) and i_auto >= len(automation) and not pool.queued() and pool.sounding() == 0:
            break
    return out[:frame]



def render_file(cfg: ServeConfig, song_path: Path, automation_path: Path | None, out: Path, rate: int,
                seed: int = 0) -> None:
    """``waeserver render``: write the song as the daemon would play it, stereo 24-bit at ``rate``."""
    import torch

    from waeserver.live.instrument import Instrument
    from waeserver.live.osc import Commands
    from waeserver.sound.bundle import load_bundle

    if not 8000 <= rate <= 192000:
        raise ValueError(f"sample rate {rate} is out of range 8000..192000")
    song = read_song(song_path)
    automation = read_automation(automation_path) if automation_path else []
    torch.manual_seed(seed)
    bundle = load_bundle(cfg.model, cfg.device)
    inst = Instrument(bundle, cfg, rate, seed=seed)
    commands = Commands(inst)
    for t, address, _ in automation:
        if address not in commands.table:
            raise ValueError(f"automation at {t:g} s: unknown address {address}")
    t0 = time.perf_counter()
    mono = render_song(inst, commands, song, automation, rate)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, np.stack([mono, mono], axis=1), rate, subtype="PCM_24")
    notes = sum(1 for _, d in song if len(d) == 3 and d[0] & 0xF0 == 0x90 and d[2] > 0)
    log.info("rendered %d notes, %.1f s of audio in %.1f s (peak %.2f) -> %s", notes, len(mono) / rate,
             time.perf_counter() - t0, float(np.abs(mono).max(initial=0.0)), out)
