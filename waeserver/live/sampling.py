"""Live sampling: a note taken from JACK's ``in_1`` (``/wae/sample/record``) or read from a file
(``/wae/encode``) becomes the latent point the notes then play with.

A take is recorded by the audio thread itself, which only copies: the sampler's thread allocates
the take's buffer, arms it (``VoicePool.record``) and JACK's process callback copies ``in_1`` into it
from the next period until it is full (``voices_capture`` in ``_voices.c``: no allocation, no lock,
no Python). The sampler's thread, neither the OSC thread nor the audio thread, then does the rest:
resamples the take from JACK's rate to the model's (``to_rate``), finds the note on its onset and
trims or pads it to the model's length (``prepare_note``, as ``waeserver transform`` does), refuses
what holds no note, encodes it with the bundle's encoder and sets the latent point through the
controls, so the renderer renders every pitch again with it. A file goes the same way from
``load_mono`` (any WAV, FLAC or AIFF, any rate, mono or stereo): the same point as ``waeserver
transform`` takes from it.

Refused, with the reason and nothing changed:

- *silence*: a peak under -80 dBFS (``SILENT_PEAK``, transform's);
- *too short*: a take must hold at least ``HOLD_FRACTION`` (half) of the model's note from the
  note's onset to the take's end (0.74 s for the shipped bundles' 1.49 s notes); less, and the
  encoder would hear the take's end (padding) rather than the note. A file ends where its note
  does, so it only needs transform's 50 ms of sound after the onset;
- *noise*: no clear pitch by YIN (``estimate_pitch``) in the note;
- a file that does not exist or cannot be read; a bundle without an encoder; a point outside the
  controls' range; no audio (offline, or JACK gone); a take that JACK never completed.

Jobs run one at a time in order, ``PENDING_MAX`` waiting at most.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from waeserver.dsp.pitch import A4_HZ, estimate_pitch
from waeserver.dsp.resample import to_rate
from waeserver.live.controls import ControlError
from waeserver.live.jobs import JobThread
from waeserver.sound.transform import TransformError, encode, note_span, prepare_note

log = logging.getLogger(__name__)

RECORD_MIN_S, RECORD_MAX_S = 0.1, 10.0   # /wae/sample/record's range
HOLD_FRACTION = 0.5     # of the model's note, a take must hold from the note's onset
PENDING_MAX = 4         # jobs waiting behind the one in progress; more are refused
TAKE_SLACK_S = 2.0      # a take not complete this long after its time: JACK stopped

Done = Callable[[list | None, str | None], None]   # (the latent point, or None and why)


def take_note(bundle, wave: np.ndarray, rate: int, take: bool) -> np.ndarray:
    """A mono sound ``[T]`` at ``rate`` Hz to the note it holds, at the model's rate and length
    ``[n_samples]``; :class:`TransformError` says why there is none. ``take``: a recording cut by
    the clock, which must hold ``HOLD_FRACTION`` of the model's note after its onset."""
    sr, n = bundle.sample_rate, bundle.n_samples
    wave = to_rate(np.asarray(wave, np.float32)[None], rate, sr)[0]
    note = prepare_note(wave, n, sr)   # silence, a sound too short for any note
    if take:
        onset, _ = note_span(wave)   # where prepare_note found the note
        if wave.size - onset < HOLD_FRACTION * n:
            raise TransformError(f"the take is too short: {(wave.size - onset) / sr:.2f} s from the note's onset "
                                 f"to its end; at least {HOLD_FRACTION * n / sr:.2f} s (half the model's note)")
    if estimate_pitch(note, sr) is None:
        raise TransformError("no clear pitch in the sound (noise?): no note to encode")
    return note


class Sampler:
    """Takes of ``pool``'s JACK input and sound files to latent points set through ``state``, on a
    thread of this object's (jobs posted with ``threaded`` False run at once: offline).

    ``latencies`` holds the milliseconds from the period that completed each take to its reply,
    ``starts`` those from each request to the period that began its take.
    """

    def __init__(self, pool, state):
        self.pool = pool
        self.state = state
        self.armed = 0             # the id of the take being recorded now (0 none)
        self.latencies: deque[float] = deque(maxlen=64)
        self.starts: deque[float] = deque(maxlen=64)
        self._ids = 0
        self._lasted = 0.0
        self._unfinished: list[np.ndarray] = []   # takes JACK never completed: it may still write them
        self._jobs = JobThread("waeserver-sampler", self._run, PENDING_MAX, "samplings")

    def warm_up(self, bundle) -> None:
        """A first pass of the note finding, pitch check and encoder at start (a tone; the latent
        point is kept), so that a performer's first take does not pay their first-call costs."""
        if bundle.encoder is None:
            return
        tone = 0.3 * np.sin(2 * np.pi * A4_HZ * np.arange(bundle.n_samples) / bundle.sample_rate)
        encode(bundle, take_note(bundle, tone, bundle.sample_rate, take=False))

    def record(self, bundle, seconds: float, rate: int, done: Done) -> None:
        """``seconds`` of ``in_1`` (JACK at ``rate`` Hz) from the period after the job starts."""
        self._check(bundle)
        asked = time.monotonic_ns()
        self._submit(lambda: self._record(bundle, int(round(seconds * rate)), rate, asked), done, True)

    def encode_file(self, bundle, path: str, done: Done, threaded: bool = True) -> None:
        """The note of sound file ``path`` (``~`` expanded; relative to the daemon's folder)."""
        self._check(bundle)
        file = Path(path).expanduser()
        if not file.is_file():
            raise ControlError(f"no such file: {file}")
        self._submit(lambda: self._read(bundle, file), done, threaded)

    @staticmethod
    def _check(bundle) -> None:
        if bundle.encoder is None:
            raise ControlError(f"{bundle.name} carries no encoder: it cannot encode a sound")

    def _submit(self, make: Callable[[], tuple], done: Done, threaded: bool) -> None:
        if not threaded:
            self._run(make, done)
            return
        self._jobs.submit(make, done)

    def _run(self, make, done: Done) -> None:
        """``make()`` -> (bundle, its note, when its take was complete in ns or None); then the point
        set and ``done`` called with it, or with the reason it was not."""
        try:
            bundle, note, complete_ns = make()
            point = encode(bundle, note)
        except (TransformError, ControlError) as exc:
            done(None, str(exc))
            return
        except Exception as exc:   # a failing job must not end the thread
            log.exception("sampling failed")
            done(None, f"sampling failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            return
        try:
            self.state.set_z(point.float().cpu().tolist())
        except ControlError as exc:
            done(None, f"the sound's latent point is out of range: {exc}")
            return
        point = self.state.z.tolist()
        done(point, None)
        shown = ", ".join(f"{v:.3f}" for v in point)
        if complete_ns is None:
            log.info("a sound file encoded: latent point %s", shown)
            return
        self.latencies.append((time.monotonic_ns() - complete_ns) / 1e6)
        log.info("a take encoded: latent point %s, replied %.1f ms after the take's end (which began %.1f ms "
                 "after the request and lasted %.3f s by the system clock)", shown, self.latencies[-1],
                 self.starts[-1], self._lasted)

    def _read(self, bundle, file: Path) -> tuple:
        from waeserver.data.user_samples import load_mono

        try:
            wave = load_mono(file, bundle.sample_rate)
        except (OSError, RuntimeError, ValueError) as exc:   # soundfile raises these for what it cannot read
            raise TransformError(f"cannot read {file}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
        return bundle, take_note(bundle, wave, bundle.sample_rate, take=False), None

    def _record(self, bundle, frames: int, rate: int, asked: int) -> tuple:
        take = np.zeros(frames, np.float32)
        self._ids += 1
        take_id = self.armed = self._ids
        self.pool.record(take, take_id)
        deadline = time.monotonic() + frames / rate + TAKE_SLACK_S
        try:
            while True:
                got_id, got, _, start_ns, complete_ns = self.pool.take()
                if got_id == take_id and got == frames:
                    break
                if time.monotonic() > deadline:
                    self._unfinished.append(take)
                    raise TransformError(f"in_1 gave {got if got_id == take_id else 0} of {frames} frames "
                                         f"in {frames / rate + TAKE_SLACK_S:.1f} s: is JACK running?")
                left = (frames - (got if got_id == take_id else 0)) / rate
                time.sleep(min(max(left - 0.01, 0.0005), 0.1))   # near the end, every half millisecond
        finally:
            self.armed = 0
        self.starts.append((start_ns - asked) / 1e6)
        self._lasted = (complete_ns - start_ns) / 1e9   # the take's length on JACK's clock: frames / rate
        return bundle, take_note(bundle, take, rate, take=True), complete_ns
