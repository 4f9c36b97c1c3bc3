"""The JACK client: audio outputs ``out_1``/``out_2``, MIDI input ``midi_in``, audio input ``in_1``
(live sampling), and the process callback.

The process callback is the C voice pool's (``jack_process`` in ``_voices.c``): it reads the
period's MIDI from ``midi_in`` at its frame offsets, mixes the voices from renders already
published, and writes the same mono mix to both outputs; while a take is armed
(``/wae/sample/record``, waeserver.live.sampling) it copies ``in_1``'s period into it. No Python
runs on JACK's process thread, so no Python thread can hold it up. Python only opens the
client, and hears about xruns and a server that went away on JACK's notification thread.
"""

from __future__ import annotations

import ctypes
import functools
import logging

import jack

log = logging.getLogger(__name__)


class _LatencyRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint32), ("max", ctypes.c_uint32)]


@functools.cache
def _latency_range():
    fn = ctypes.CDLL("libjack.so.0").jack_port_get_latency_range
    fn.restype, fn.argtypes = None, [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_LatencyRange)]
    return fn


def port_latency(port, playback: bool = True) -> int:
    """The most frames JACK reports between ``port`` (a JACK-Client port) and the sound card, on the
    way out (``playback``) or in; JACK-Client itself does not expose it."""
    found = _LatencyRange()
    _latency_range()(int(jack._ffi.cast("uintptr_t", port._ptr)), 1 if playback else 0, ctypes.byref(found))
    return int(found.max)


class JackAudio:
    """A JACK client named ``name`` on server ``server`` (None: the default) playing ``pool``.

    :attr:`gone` turns true when the server shuts down under us; :meth:`open` again to reconnect.
    """

    def __init__(self, name: str, server: str | None, pool, connect: bool = True):
        self.name = name
        self.server = server
        self.pool = pool
        self.connect = connect
        self.client: jack.Client | None = None
        self.xruns = 0
        self.gone = False

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
        self.in_1 = client.inports.register("in_1")
        if self.pool.rate != client.samplerate:
            self.pool.set_rate(client.samplerate)
        self.pool.attach_jack(client, self.out_1, self.out_2, self.midi_in, self.in_1)
        client.set_xrun_callback(self._xrun)
        client.set_shutdown_callback(self._shutdown)
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

    def playback_latency(self) -> int:
        """Frames from our output port to the sound card, as JACK reports them."""
        return port_latency(self.out_1) if self.client is not None and not self.gone else 0

    # --- callbacks (JACK's notification thread) --------------------------------------------------
    def _xrun(self, delay_usecs: float) -> None:
        self.xruns += 1

    def _shutdown(self, status, reason: str) -> None:
        self.gone = True
