"""Time-tagged OSC bundles, applied as scsynth applies them: at the audio frame of their time tag.

A bundle's time tag is NTP time on the system clock (``CLOCK_REALTIME``). :class:`Scheduler` holds
a bundle tagged for the future and, ``LEAD_S`` before its time, maps the tag to a frame of the C
voice pool and runs its messages in order, every one inside :meth:`VoicePool.at` with that frame,
so that what each posts to the pool is held in the C pool's heap and applied on its very frame
inside the period, in order with the rest (as JACK MIDI is):

* notes, voice actions and syncs (``/wae/note``, ``/wae/noteon``, ``/wae/noteoff``, ``/wae/panic``,
  ``/wae/sync``);
* the controls the pool applies itself, ``/wae/gain``, ``/wae/release``, ``/wae/bend_range`` (and
  those a preset loads): the master gain ramps to its new value over ``GAIN_RAMP_S`` (1 ms) from
  the frame, a release applies to voices released from the frame on, a bend range to bends from it
  on; notes before keep the old ones;
* timbre changes (``/wae/style``, ``/wae/styles``, ``/wae/mix``, ``/wae/z``, ``/wae/z/random``,
  ``/wae/z/mode``, a preset): the control state and the render target change at once, ``LEAD_S``
  early, so that the renderer starts on the new target ahead; but the target is a new render
  generation (:meth:`VoicePool.timbre`) that notes take only from the frame on. The rule: a note
  tagged before the change plays the renders made before it, a note tagged at or after it those
  made for it (rendered ahead if there was time, else it waits for them within the latency budget
  or plays the old ones as a stand-in and crossfades, as any note finding its renders stale does).
  The pool keeps two renders per pitch and layer (the latest, and the one notes take now): with
  two timbre changes less than ``LEAD_S`` apart, a note between the two may still play the renders
  from before the first.

Replies and ``/wae/state`` notifications of a held bundle are sent when it runs, ``LEAD_S`` early.

The tag maps to a frame through :class:`FrameClock`, which follows JACK's cycle times
(``jack_get_cycle_times``, re-read by the C pool every period, see ``voices_anchor`` in
``_voices.c``), and the system clock's offset from ``CLOCK_MONOTONIC`` read at that moment: JACK's
DLL follows the sound card's clock and NTP slews the system clock, and since both are read afresh
for every bundle (at most ``LEAD_S`` before its time) the mapping does not drift over an hour.

Tag 1 ("now"), and a tag whose time has passed, run at once; a late one is reported
(``on_late``). More than ``MAX_AHEAD_S`` ahead, more than
``MAX_PENDING`` messages held, nested bundles and malformed ones are refused whole.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

log = logging.getLogger(__name__)

NTP_EPOCH = 2208988800      # seconds from 1900 (NTP) to 1970 (Unix)
LEAD_S = 0.025              # a held bundle runs this long before its time (covers the thread's wake-up)
MAX_AHEAD_S = 60.0
MAX_PENDING = 4096          # messages held in bundles not yet run
TICK_S = 0.05               # the scheduler follows JACK's clock at least this often
MAPPED_KEPT = 256           # the latest bundles' (tag, frame) the scheduler keeps, to show where they went


class BundleError(ValueError):
    """A bundle refused whole; the message says why."""


def encode_bundle(when: float | None, messages: list[tuple[str, list]]) -> bytes:
    """A bundle of ``(address, args)`` messages tagged ``when`` (Unix seconds; None: now), as a
    client sends it (the tests and benchmarks do)."""
    bundle = OscBundleBuilder(IMMEDIATELY if when is None else when)
    for address, args in messages:
        msg = OscMessageBuilder(address)
        for a in args:
            msg.add_arg(a)
        bundle.add_content(msg.build())
    return bundle.build().dgram


def parse_bundle(data: bytes) -> tuple[float | None, list[OscMessage]]:
    """``(time, messages)`` of an OSC bundle: ``time`` in Unix seconds, None for tag 1 ("now").
    A nested bundle, a truncated element or a malformed message is refused (:class:`BundleError`)."""
    if len(data) < 16 or data[:8] != b"#bundle\0":
        raise BundleError("not an OSC bundle")
    (tag,) = struct.unpack(">Q", data[8:16])
    when = None if tag == 1 else (tag >> 32) - NTP_EPOCH + (tag & 0xFFFFFFFF) / 2**32
    messages, i = [], 16
    while i < len(data):
        if i + 4 > len(data):
            raise BundleError("truncated bundle element size")
        (size,) = struct.unpack(">i", data[i:i + 4])
        if size <= 0 or size % 4 or i + 4 + size > len(data):
            raise BundleError(f"bad bundle element size {size}")
        element = data[i + 4:i + 4 + size]
        if element.startswith(b"#bundle"):
            raise BundleError("nested bundles are not taken: send their messages in one bundle")
        try:
            messages.append(OscMessage(element))
        except Exception as exc:   # pythonosc raises several kinds for a bad message
            raise BundleError(f"malformed message in bundle ({exc})"[:200]) from None
        i += 4 + size
    return when, messages


class FrameClock:
    """System time to the C pool's frames, from the latest JACK period's anchor (``pool.anchor()``).

    JACK's DLL gives each period's start a time, but with some jitter (a few frames on a busy VM),
    and sample-accurate spacing wants the same mapping for every note of a phrase. So the clock
    keeps its own line, frames at the pool's nominal rate from a base, and moves its base towards
    each new anchor by ``dt / TAU_S`` of the difference (``dt``: the time since the last move; the
    scheduler moves it every ``TICK_S``, bundles or not): the
    DLL's jitter averages out, a sound card's drift against the system clock (some ppm) is followed
    (behind by the drift times ``TAU_S``: 0.2 ms at 100 ppm), and a jump larger than ``RESYNC_S``
    (an xrun, a driver that lost time) re-anchors at once.
    """

    TAU_S = 2.0
    RESYNC_S = 0.002

    def __init__(self, pool):
        self.pool = pool
        self._base: tuple[float, int] | None = None   # (frame, monotonic ns)
        self._lock = threading.Lock()

    def update(self) -> bool:
        """Move the line towards the latest anchor; False before JACK's first period."""
        anchor = self.pool.anchor()
        if anchor is None:
            return False
        frame, ns, _, _ = anchor
        per_ns = self.pool.rate / 1e9
        with self._lock:
            if self._base is not None:
                base_frame, base_ns = self._base
                error = frame - (base_frame + (ns - base_ns) * per_ns)
                if abs(error) > self.RESYNC_S * self.pool.rate or ns < base_ns:
                    self._base = None
                else:   # the base moves to the anchor's time, and part of the way to its frame
                    step = min(1.0, (ns - base_ns) / 1e9 / self.TAU_S)
                    self._base = (base_frame + (ns - base_ns) * per_ns + step * error, ns)
            if self._base is None:
                self._base = (float(frame), ns)
        return True

    def frame_at(self, monotonic_ns: int) -> int | None:
        """The pool frame that sounds at ``monotonic_ns``; None before JACK's first period."""
        if not self.update():
            return None
        with self._lock:
            base_frame, base_ns = self._base
        return round(base_frame + (monotonic_ns - base_ns) * self.pool.rate / 1e9)


class Scheduler:
    """Holds bundles for their time and runs them on a thread of its own.

    ``run(messages, sender)`` runs a bundle's messages now (the OSC server's dispatch); ``pool`` (a
    :class:`~waeserver.live.voices.VoicePool`) maps times to frames and takes the timed actions;
    ``on_late(seconds, address)`` hears each late bundle. ``mapped`` holds ``(tag, frame)`` of the
    latest ``MAPPED_KEPT`` bundles run on a frame: where each tag went.
    """

    def __init__(self, pool, run: Callable[[list, object], None],
                 on_late: Callable[[float, str], None] = lambda seconds, address: None):
        self.pool = pool
        self._run_now = run
        self.on_late = on_late
        self.clock = FrameClock(pool)
        self.mapped: deque[tuple[float, int]] = deque(maxlen=MAPPED_KEPT)
        self.pending = 0                        # messages held
        self._heap: list = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="waeserver-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(1.0)

    def submit(self, when: float | None, messages: list, sender) -> None:
        """Run a bundle (``when``: Unix seconds, None: now) at its time; :class:`BundleError` refuses it."""
        now = time.time()
        if when is None or when <= now + LEAD_S:
            if when is not None and when < now:
                self.on_late(now - when, messages[0].address if messages else "")
            self._apply(when, messages, sender)
            return
        if when > now + MAX_AHEAD_S:
            raise BundleError(f"bundle tagged {when - now:.1f} s ahead: at most {MAX_AHEAD_S:g} s")
        with self._cond:
            if self.pending + len(messages) > MAX_PENDING:
                raise BundleError(f"{self.pending} messages are held already: at most {MAX_PENDING}")
            self.pending += len(messages)
            heapq.heappush(self._heap, (when, next(self._order), messages, sender))
            self._cond.notify()

    def _apply(self, when: float | None, messages: list, sender) -> None:
        frame = None
        if when is not None:
            offset = time.time_ns() - time.monotonic_ns()   # the system clock as it stands now
            frame = self.clock.frame_at(round(when * 1e9) - offset)
        if frame is None:
            self._run_now(messages, sender)
            return
        self.mapped.append((when, frame))
        with self.pool.at(frame):   # what the messages post to the pool is held for the frame
            self._run_now(messages, sender)

    def _loop(self) -> None:
        while True:
            self.clock.update()   # every TICK_S at least, so that the clock has averaged before a bundle
            with self._cond:
                if self._stop:
                    return
                wait = self._heap[0][0] - LEAD_S - time.time() if self._heap else TICK_S
                if wait > 0:
                    self._cond.wait(min(TICK_S, wait))
                    continue
                when, _, messages, sender = heapq.heappop(self._heap)
                self.pending -= len(messages)
            now = time.time()
            if now > when:   # woken too late for its frame: it applies at once
                self.on_late(now - when, messages[0].address if messages else "")
            try:
                self._apply(when, messages, sender)
            except Exception:   # a bug in one handler must not stop the scheduler
                log.exception("timed bundle failed")
