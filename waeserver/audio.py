"""The JACK client: audio outputs ``out_1``/``out_2``, MIDI input ``midi_in``, and the process callback.

The callback is the whole real-time path: it hands the period's MIDI events to the parser with
their frame offsets (so notes start on the frame they were played), mixes the voices from renders
already in the cache, and writes the same mono mix to both outputs. It takes no lock, does no
logging and never touches torch; the only allocations are the small Python objects JACK-Client
itself hands over (port views, event tuples).
"""

from __future__ import annotations

import logging
from time import perf_counter

import jack
import numpy as np

log = logging.getLogger(__name__)

TIMED_PERIODS = 4096   # recent callbacks whose duration is kept (about 22 s at 48 kHz / 256)


class JackAudio:
    """A JACK client named ``name`` on server ``server`` (None: the default) playing ``pool``.

    ``midi`` is the :class:`~waeserver.midi.MidiIn` that drives ``pool`` on the audio thread.
    :attr:`gone` turns true when the server shuts down under us; :meth:`open` again to reconnect.
    """

    def __init__(self, name: str, server: str | None, pool, midi, connect: bool = True):
        self.name = name
        self.server = server
        self.pool = pool
        self.midi = midi
        self.connect = connect
        self.client: jack.Client | None = None
        self.xruns = 0
        self.errors = 0
        self.gone = False
        self.took = np.zeros(TIMED_PERIODS)   # seconds each recent callback took
        self.calls = 0

    @property
    def rate(self) -> int:
        return self.client.samplerate

    @property
    def period(self) -> int:
        return self.client.blocksize

    def open(self) -> None:
        """Connect to the JACK server, register the ports and start processing."""
        client = jack.Client(self.name, use_exact_name=True, no_start_server=True, servername=self.server)
        self.out_1 = client.outports.register("out_1")
        self.out_2 = client.outports.register("out_2")
        self.midi_in = client.midi_inports.register("midi_in")
        if self.pool.rate != client.samplerate or self.pool.max_period < client.blocksize:
            self.pool.set_rate(client.samplerate, max(8192, client.blocksize))
        client.set_process_callback(self._process)
        client.set_xrun_callback(self._xrun)
        client.set_shutdown_callback(self._shutdown)
        client.set_blocksize_callback(self._blocksize)
        self.client = client
        self.gone = False
        client.activate()
        if self.connect:
            playback = client.get_ports(is_physical=True, is_input=True, is_audio=True)
            for port, target in zip((self.out_1, self.out_2), playback):
                try:
                    port.connect(target)
                except jack.JackError as exc:
                    log.warning("cannot connect %s to %s: %s", port.name, target.name, exc)

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if not self.gone:
                client.deactivate()
            client.close()
        except jack.JackError:  # the server is already gone
            pass

    def cpu_load(self) -> float:
        try:
            return float(self.client.cpu_load()) if self.client is not None and not self.gone else 0.0
        except jack.JackError:
            return 0.0

    def callback_ms(self) -> float:
        """The longest the process callback took over recent periods (ms), waits for the
        interpreter lock inside it included; compare it with the period. (Timed with the
        interpreter's clock: asking JACK would release the lock once more per period.)"""
        n = min(self.calls, TIMED_PERIODS)
        return float(self.took[:n].max()) * 1000.0 if n else 0.0

    def playback_latency(self) -> int:
        """Frames from our output port to the sound card, as JACK reports them."""
        try:
            return int(self.out_1.get_latency_range(jack.PLAYBACK)[1])
        except (jack.JackError, AttributeError):
            return 0

    # --- callbacks (JACK's threads) ------------------------------------------------------------
    def _process(self, frames: int) -> None:
        t0 = perf_counter()
        out = self.out_1.get_array()
        try:
            pool, midi = self.pool, self.midi
            pool.begin(frames)
            for offset, data in self.midi_in.incoming_midi_events():
                midi.handle(bytes(data), offset)
            pool.finish(out)
        except Exception:  # counted and reported by the main thread; JACK must keep calling us
            self.errors += 1
            out.fill(0.0)
        self.out_2.get_array()[:] = out
        self.took[self.calls % TIMED_PERIODS] = perf_counter() - t0
        self.calls += 1

    def _xrun(self, delay_usecs: float) -> None:
        self.xruns += 1

    def _shutdown(self, status, reason: str) -> None:
        self.gone = True

    def _blocksize(self, blocksize: int) -> None:
        if blocksize > self.pool.max_period:  # JACK stops processing while this runs
            self.pool.set_rate(self.pool.rate, blocksize)
