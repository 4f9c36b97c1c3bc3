"""The instrument: everything that makes sound around one bundle, without any transport.

Controls, render cache, renderer, voices, MIDI parsing, presets, note files and sampling. ``serve``
(waeserver.live.daemon) puts JACK, OSC, hardware MIDI inputs and a control thread around it;
``render`` (waeserver.live.offline) drives the same instrument on a virtual clock.
"""

from __future__ import annotations

import gc
import logging
from collections import deque

import numpy as np

from waeserver.live.cache import RenderCache
from waeserver.live.config import ConfigError, ServeConfig
from waeserver.live.controls import ControlError, ControlState
from waeserver.live.midi import MidiControls, MidiSettings, curve_exponent
from waeserver.live.note_files import NoteFiles, render_note
from waeserver.live.notes import layer_velocities
from waeserver.live.presets import PresetError, PresetStore
from waeserver.live.renderer import Renderer
from waeserver.live.sampling import Sampler
from waeserver.live.voices import VoicePool, velocity_gain

log = logging.getLogger(__name__)


class Instrument:
    """The sound engine around one bundle at ``rate`` Hz, configured by ``cfg``."""

    def __init__(self, bundle, cfg: ServeConfig, rate: int, seed: int | None = None, worker=None,
                 priority_worker=None):
        self.cfg = cfg
        self.state = ControlState(bundle.styles, bundle.latent_size, cfg.gain, cfg.release, cfg.bend_range)
        self.cache = RenderCache(bundle.pitch_range, cfg.fader_jitter, layer_velocities(bundle))
        self.renderer = Renderer(bundle, self.state, self.cache, rate, cfg.render_batch, seed=seed,
                                 slice_ms=cfg.latency_budget_ms, worker=worker, priority_worker=priority_worker)
        self.pool = VoicePool(rate, self.cache, cfg.polyphony, cfg.latency_budget_ms)
        self.pool.gain, self.pool.release, self.pool.bend_range = cfg.gain, cfg.release, cfg.bend_range
        self.presets = PresetStore(cfg.preset_dir)
        self.note_files = NoteFiles(cfg.render_dir, cfg.render_dir_mb, threaded=False)   # the daemon: a thread
        self.sampler = Sampler(self.pool, self.state)
        self._file_rng = np.random.default_rng(seed)   # per-note z of /wae/render (the renderer's is its thread's)
        self.controls: deque[tuple] = deque()   # from MIDI parsers, for the control thread
        self.midi_settings = MidiSettings(cfg.midi_channel, curve_exponent(cfg.velocity_curve), dict(cfg.cc_map))
        for target in cfg.cc_map.values():
            try:
                self.state.check_target(target)
            except ControlError as exc:
                raise ConfigError(f"cc_map: {exc}") from None
        self.pool.set_velocity_curve(self.midi_settings.exponent)
        self.pool.set_channel(cfg.midi_channel)
        self.pool.on_control = MidiControls(self.controls.append, self.midi_settings).handle
        self.audio = None                                                        # JackAudio when live
        self.notify = lambda key, values: None
        self.state.listeners.append(self._follow)
        self.renderer.on_swap.append(self._swapped)
        self.renderer.on_worker.append(lambda mode: self.notify("render", [mode]))
        self.renderer.retarget()

    @property
    def bundle(self):
        return self.renderer.bundle

    def _follow(self, key: str, values: list) -> None:
        if key in ("styles", "z", "z_mode"):
            self.renderer.retarget()
        elif key in ("gain", "release", "bend_range"):
            setattr(self.pool, key, values[0])
        self.notify(key, values)

    def _swapped(self, bundle, cache: RenderCache) -> None:
        self.cache = cache
        cache.attach(self.pool)
        gc.freeze()   # the new model's objects too (see Daemon.start)
        self.notify("model", [bundle.name])

    def set_rate(self, rate: int) -> None:
        """Follow a new output rate (the voices already do: JackAudio.open): every render is redone at it."""
        self.renderer.set_rate(rate)
        self.cache.clear()

    def velocity_gain(self, velocity: int) -> float:
        return velocity_gain(velocity, self.midi_settings.exponent)

    # --- control thread ------------------------------------------------------------------------
    def control(self, action: tuple) -> None:
        """Apply one MIDI control action (mapped CC, learn, program change)."""
        kind = action[0]
        try:
            if kind == "cc":
                self.state.set_target(action[1], action[2])
            elif kind == "learn":
                cc, target = action[1], action[2]
                log.info("MIDI learn: CC%d -> %s", cc, target)
                self.notify("learn", [target, cc])
            elif kind == "program":
                self.load_preset(self.cfg.programs.get(action[1], str(action[1])))
        except (ControlError, PresetError) as exc:
            log.warning("MIDI %s refused: %s", kind, exc)

    def learn(self, target: str) -> None:
        self.midi_settings.learn = target

    def sync(self, token) -> None:
        self.pool.sync(token)

    def save_preset(self, name: str) -> None:
        try:
            self.presets.save(name, {**self.state.snapshot(), "model": self.bundle.name})
        except PresetError as exc:
            raise ControlError(str(exc)) from None
        except OSError as exc:
            raise ControlError(f"cannot save preset {name!r}: {exc.strerror or exc}") from None

    def load_preset(self, name: str) -> None:
        try:
            self.state.restore(self.presets.load(name))
        except PresetError as exc:
            raise ControlError(str(exc)) from None
        self.notify("preset", [name])

    def render_file(self, name: str, pitch: int, velocity: int, done) -> None:
        """``/wae/render``: ``pitch`` at ``velocity`` with the controls of now to ``render_dir/NAME.wav``;
        ``done(path, frames, rate, error)`` once written (see waeserver.live.note_files)."""
        path = self.note_files.path(name)
        styles, z, per_note = self.renderer.target()
        if per_note:
            z = self._file_rng.standard_normal(len(z)).astype(np.float32)
        bundle, rate = self.bundle, self.renderer.rate
        self.note_files.submit(lambda: (render_note(bundle, pitch, velocity, styles, z, rate), rate), path, done)

    def sample(self, seconds: float, done) -> None:
        """``/wae/sample/record``: ``seconds`` of JACK's ``in_1`` to the latent point, on the sampler's
        thread; ``done(point, error)`` (see waeserver.live.sampling)."""
        audio = self.audio
        if self.pool.refusing:
            raise ControlError(self.pool.refusing)
        if audio is None or audio.client is None or audio.gone:
            raise ControlError("no audio input here: /wae/sample/record records from the live daemon's JACK in_1")
        self.sampler.record(self.bundle, seconds, self.pool.rate, done)

    def encode_file(self, path: str, done) -> None:
        """``/wae/encode``: the note of sound file ``path`` to the latent point; ``done(point, error)``,
        from the sampler's thread live, at once offline."""
        self.sampler.encode_file(self.bundle, path, done, threaded=self.audio is not None)

    def load_model(self, path: str, done) -> None:
        self.renderer.load_model(path, self.cfg.device, done)

    def status(self) -> dict:
        render = list(self.renderer.render_ms)
        p50, p99 = (float(np.percentile(render, 50)), float(np.percentile(render, 99))) if render else (0.0, 0.0)
        _, lat99 = self.pool.latency_ms()
        audio = self.audio
        period_ms = 0.0
        callback_ms = 0.0
        if audio is not None and audio.client is not None and not audio.gone:
            period_ms = (audio.period + audio.playback_latency()) * 1000.0 / audio.rate
            callback_ms = self.pool.callback_ms()
        return {"voices": self.pool.sounding(), "xruns": audio.xruns if audio else 0,
                "cpu_load": audio.cpu_load() if audio else 0.0, "render_ms_p50": p50, "render_ms_p99": p99,
                "note_latency_ms": period_ms + lat99, "cache_hits": self.pool.hits,
                "cache_misses": self.pool.misses, "device": str(self.bundle.device), "model": self.bundle.name,
                "standins": self.pool.standins, "callback_ms_max": callback_ms}
