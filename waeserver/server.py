"""``waeserver serve``: the live daemon, assembled from the instrument and its transports.

:class:`Instrument` is everything that makes sound, without any transport: controls, render
cache, renderer, voices, MIDI parsing, presets. ``serve`` puts JACK, OSC, hardware MIDI inputs
and a control thread around it; ``render`` (waeserver.offline) drives the same instrument on a
virtual clock.

Threads: JACK's process thread (the C voice pool and JACK MIDI, no Python), the renderer (the
model), the OSC server, the control thread (the pool's events: MIDI CC mapping, learn, program
changes, outgoing notifications, every 10 ms), mido's input threads, and the main thread, which
watches the JACK connection and the signals.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from waeserver.cache import RenderCache
from waeserver.config import ConfigError, ServeConfig, add_config_arguments, resolve
from waeserver.faders import ControlError, ControlState
from waeserver.midi import MidiControls, MidiSettings, curve_exponent, open_inputs, velocity_gain
from waeserver.note_files import NoteFiles, render_note
from waeserver.preset_store import PresetError, PresetStore
from waeserver.renderer import Renderer, RenderWorker, layer_velocities
from waeserver.voices import VoicePool

log = logging.getLogger(__name__)

CONTROL_TICK = 0.010   # notifications and mapped CCs within 10 ms


class Instrument:
    """The sound engine around one bundle at ``rate`` Hz, configured by ``cfg``."""

    def __init__(self, bundle, cfg: ServeConfig, rate: int, seed: int | None = None, worker=None):
        self.cfg = cfg
        self.state = ControlState(bundle.styles, bundle.latent_size, cfg.gain, cfg.release, cfg.bend_range)
        self.cache = RenderCache(bundle.pitch_range, cfg.fader_jitter, layer_velocities(bundle))
        self.renderer = Renderer(bundle, self.state, self.cache, rate, cfg.render_batch, seed=seed,
                                 slice_ms=cfg.latency_budget_ms, worker=worker)
        self.pool = VoicePool(rate, self.cache, cfg.polyphony, cfg.latency_budget_ms)
        self.pool.gain, self.pool.release, self.pool.bend_range = cfg.gain, cfg.release, cfg.bend_range
        self.presets = PresetStore(cfg.preset_dir)
        self.note_files = NoteFiles(cfg.render_dir, cfg.render_dir_mb, threaded=False)   # the daemon: a thread
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
        ``done(path, frames, rate, error)`` once written (see waeserver.note_files)."""
        path = self.note_files.path(name)
        styles, z, per_note = self.renderer.target()
        if per_note:
            z = self._file_rng.standard_normal(len(z)).astype(np.float32)
        bundle, rate = self.bundle, self.renderer.rate
        self.note_files.submit(lambda: (render_note(bundle, pitch, velocity, styles, z, rate), rate), path, done)

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


# --- JACK server -------------------------------------------------------------------------------
def _has_sound_card() -> bool:
    try:
        text = Path("/proc/asound/cards").read_text()
    except OSError:
        return False
    return bool(text.strip()) and "no soundcards" not in text


def ensure_jack(server: str | None) -> tuple[int, int, subprocess.Popen | None]:
    """The JACK server's rate and period; starts ``jackd`` first when none runs (then also its process)."""
    import jack

    try:
        probe = jack.Client("waeserver-probe", no_start_server=True, servername=server)
    except jack.JackOpenError:
        probe, proc = _start_jackd(server)
    else:
        proc = None
    rate, period = probe.samplerate, probe.blocksize
    probe.close()
    return rate, period, proc


def _start_jackd(server: str | None):
    import jack

    if shutil.which("jackd") is None:
        raise OSError("no JACK server is running and jackd is not installed (apt install jackd2)")
    name = server or os.environ.get("JACK_DEFAULT_SERVER")
    drivers = [("alsa", ["-d", "alsa", "-r", "48000", "-p", "256"])] if _has_sound_card() else []
    drivers.append(("dummy", ["-d", "dummy", "-r", "48000", "-p", "256"]))  # realtime where allowed
    for driver, cmd in drivers:
        argv = ["jackd", *(["-n", name] if name else []), *cmd]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                probe = jack.Client("waeserver-probe", no_start_server=True, servername=server)
            except jack.JackOpenError:
                time.sleep(0.2)
                continue
            log.warning("no JACK server was running: started jackd%s with the %s driver at %d Hz, %d frames",
                        f" -n {name}" if name else "", driver, probe.samplerate, probe.blocksize)
            return probe, proc
        proc.terminate()
        proc.wait(5)
    raise OSError("no JACK server is running and jackd would not start")


# --- the daemon --------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``waeserver serve`` (every config option, see waeserver.config)."""
    add_config_arguments(parser)


class Daemon:
    """A running ``serve``: :meth:`start`, then :meth:`run` until :meth:`stop` (or a signal)."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.stopping = threading.Event()
        self.jackd = None
        self.osc = None
        self.hardware: list = []

    def start(self) -> None:
        from waeserver.audio import JackAudio
        from waeserver.bundle import load_bundle
        from waeserver.osc import Commands, OscServer

        import torch

        cfg = self.cfg
        bundle = load_bundle(cfg.model, cfg.device)
        if bundle.device.type == "cpu":
            torch.set_num_threads(1)  # leave the other core to the audio thread
        rate, period, self.jackd = ensure_jack(cfg.jack_server)
        log.info("model %s (%d styles: %s; latent %d; %d Hz) on %s", bundle.name, len(bundle.styles),
                 ", ".join(bundle.styles), bundle.latent_size, bundle.sample_rate, bundle.device)
        worker = RenderWorker(str(bundle.path), cfg.device, rate, layer_velocities(bundle))
        self.inst = inst = Instrument(bundle, cfg, rate, worker=worker)
        inst.note_files.threaded = True   # never in the OSC thread
        inst.renderer.warm_up()
        seconds = inst.renderer.fill()
        log.info("rendered %d pitches ahead, at velocities %s each, in %.2f s (one priority pitch: %.1f ms)",
                 inst.cache.n_fresh(), "/".join(map(str, inst.cache.velocities)), seconds, inst.cache.expected_ms)
        self.audio = JackAudio(cfg.jack_name, cfg.jack_server, inst.pool, cfg.jack_connect)
        self._open_jack()
        inst.audio = self.audio
        self.commands = Commands(inst)
        self.osc = OscServer(self.commands, cfg.osc_host, cfg.osc_port, cfg.osc_allow)
        self.hardware = open_inputs(cfg.midi_inputs, inst.pool)
        inst.renderer.start()
        self.osc.start()
        self._control = threading.Thread(target=self._control_loop, name="waeserver-control", daemon=True)
        self._control.start()
        a = self.audio
        period_ms = a.period * 1000.0 / a.rate
        waits = inst.cache.expected_ms <= cfg.latency_budget_ms - period_ms
        policy = "waits for it" if waits else "plays the last render meanwhile"
        log.info("JACK: client %s, %d Hz, %d-frame periods (%.2f ms), playback latency %d frames; "
                 "process thread %s", a.client.name, a.rate, a.period, period_ms, a.playback_latency(),
                 inst.pool.jack_thread())
        log.info("note latency: %.2f ms for a rendered-ahead note (one period, sample-accurate MIDI); "
                 "a note needing a new render takes %.1f ms to render (budget %.1f ms: it %s)",
                 period_ms, inst.cache.expected_ms, cfg.latency_budget_ms, policy)
        # A full garbage collection walks every object torch and the model made (about 200,000):
        # some 90 ms holding the interpreter lock, in whichever thread triggers it, a priority
        # render or an OSC reply waiting meanwhile. Frozen, they are never walked again.
        gc.freeze()
        log.info("OSC on %s:%d; ready", *self.osc.address)

    def _open_jack(self) -> None:
        import jack

        try:
            self.audio.open()
        except jack.JackError as exc:
            raise OSError(f"cannot open JACK client {self.cfg.jack_name!r}: {exc}") from None
        if self.audio.rate != self.inst.renderer.rate:
            log.info("JACK runs at %d Hz now: rendering every note again", self.audio.rate)
            self.inst.set_rate(self.audio.rate)

    def _control_loop(self) -> None:
        inst, osc = self.inst, self.osc
        while not self.stopping.wait(CONTROL_TICK):
            inst.pool.poll()
            events = inst.pool.events
            while events:
                kind, arg = events.popleft()
                if kind == "synced":
                    dest, token = arg
                    if dest is not None:
                        osc.send(dest, "/wae/synced", [token])
                else:
                    self.commands.broadcast(f"/wae/{kind}", [arg])
            while inst.controls:
                inst.control(inst.controls.popleft())

    def run(self) -> None:
        """Watch the JACK connection until stopped; reconnect when the server comes back."""
        pool = self.inst.pool
        lost, lost_logged = pool.lost, 0.0
        while not self.stopping.wait(0.1):
            if pool.lost != lost and time.monotonic() - lost_logged > 1.0:
                n = pool.lost - lost
                log.warning("%d voice action%s not taken (the last: %s)", n, "" if n == 1 else "s", pool.lost_why)
                lost, lost_logged = pool.lost, time.monotonic()
            if self.audio.gone:
                pool.refusing = "no audio: the JACK server went away; notes play again when it is back"
                log.warning("the JACK server went away; playing resumes when it is back")
                self.audio.close()
                while not self.stopping.wait(1.0):
                    try:
                        self._restart_own_jackd()
                        self._open_jack()
                    except OSError:
                        continue
                    log.info("JACK is back: %d Hz, %d-frame periods", self.audio.rate, self.audio.period)
                    pool.refusing = ""
                    break

    def _restart_own_jackd(self) -> None:
        """Start the JACK server again if it was this daemon's own and it has exited."""
        if self.jackd is None or self.jackd.poll() is None:
            return
        log.warning("the jackd this daemon started has exited (status %s): starting it again", self.jackd.returncode)
        self.jackd = None
        probe, self.jackd = _start_jackd(self.cfg.jack_server)
        probe.close()

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.stopping.set()
        if hasattr(self, "inst"):
            self.inst.renderer.stop()
        if self.osc is not None:
            self.osc.stop()
        for port in self.hardware:
            port.close()
        if hasattr(self, "audio"):
            self.audio.close()
        if self.jackd is not None:
            self.jackd.terminate()
            try:
                self.jackd.wait(2)
            except subprocess.TimeoutExpired:
                self.jackd.kill()


def run_serve(args: argparse.Namespace) -> int:
    """``waeserver serve``: start, play until SIGINT/SIGTERM, stop within a second.

    After a signal and a clean stop (JACK client, sockets, render process and any jackd of ours
    closed; presets are always on disk) the process ends at once: the interpreter's own teardown
    of torch takes about a second on a busy two-core machine.
    """
    daemon = Daemon(resolve(args))
    signalled = []
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum, frame):
            signalled.append(signum)
            daemon.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
    try:
        daemon.start()
        daemon.run()
    finally:
        daemon.close()
    log.info("stopped")
    if signalled:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m waeserver.server``: the same as ``waeserver serve``."""
    parser = argparse.ArgumentParser(prog="waeserver serve")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return run_serve(args)
    except Exception as exc:
        print(f"waeserver: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
