"""``waeserver serve``: the live daemon, the instrument (waeserver.live.instrument) with its transports.

Threads: JACK's process thread (the C voice pool and JACK MIDI, no Python), the renderer (the
model), the OSC server, the control thread (the pool's events: MIDI CC mapping, learn, program
changes, outgoing notifications, every 10 ms), mido's input threads, and the main thread, which
watches the JACK connection and the signals.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from waeserver.live.config import ServeConfig
from waeserver.live.instrument import Instrument
from waeserver.live.jackd import ensure_jack, start_jackd
from waeserver.live.midi import open_inputs
from waeserver.live.notes import layer_velocities
from waeserver.live.render_worker import RenderWorker

log = logging.getLogger(__name__)

CONTROL_TICK = 0.010   # notifications and mapped CCs within 10 ms


class Daemon:
    """A running ``serve``: :meth:`start`, then :meth:`run` until :meth:`stop` (or a signal)."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.stopping = threading.Event()
        self.jackd = None
        self.osc = None
        self.hardware: list = []

    def start(self) -> None:
        import torch

        from waeserver.live.jack_client import JackAudio
        from waeserver.live.osc import Commands
        from waeserver.live.osc_server import OscServer
        from waeserver.sound.bundle import load_bundle

        cfg = self.cfg
        bundle = load_bundle(cfg.model, cfg.device)
        if bundle.device.type == "cpu":
            torch.set_num_threads(1)  # leave the other core to the audio thread
        rate, period, self.jackd = ensure_jack(cfg.jack_server)
        log.info("model %s (%d styles: %s; latent %d; %d Hz) on %s", bundle.name, len(bundle.styles),
                 ", ".join(bundle.styles), bundle.latent_size, bundle.sample_rate, bundle.device)
        worker = RenderWorker(str(bundle.path), cfg.device, rate, layer_velocities(bundle))
        priority = RenderWorker(str(bundle.path), cfg.device, rate, layer_velocities(bundle),
                                background=False) if cfg.priority_process else None
        self.inst = inst = Instrument(bundle, cfg, rate, worker=worker, priority_worker=priority)
        inst.note_files.threaded = True   # never in the OSC thread
        inst.renderer.warm_up()
        inst.sampler.warm_up(bundle)
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
        probe, self.jackd = start_jackd(self.cfg.jack_server)
        probe.close()

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        """Stop everything, in order; a part that fails to stop is logged and the rest still stop
        (above all the JACK client, which must not outlive the voice pool it calls)."""
        self.stopping.set()
        parts = [self.inst.renderer.stop] if hasattr(self, "inst") else []
        parts += [self.osc.stop] if self.osc is not None else []
        parts += [port.close for port in self.hardware]
        parts += [self.audio.close] if hasattr(self, "audio") else []
        for stop in parts:
            try:
                stop()
            except Exception:
                log.exception("stopping %s failed", getattr(stop, "__qualname__", stop))
        if self.jackd is not None:
            self.jackd.terminate()
            try:
                self.jackd.wait(2)
            except subprocess.TimeoutExpired:
                self.jackd.kill()


def serve(cfg: ServeConfig) -> int:
    """``waeserver serve``: start, play until SIGINT/SIGTERM, stop within a second.

    After a signal and a clean stop (JACK client, sockets, render process and any jackd of ours
    closed; presets are always on disk) the process ends at once: the interpreter's own teardown
    of torch takes about a second on a busy two-core machine.
    """
    daemon = Daemon(cfg)
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

