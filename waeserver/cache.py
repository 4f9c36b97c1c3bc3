"""The render-ahead cache: one rendered note per playable MIDI pitch, at the output sample rate.

Policy (see docs/live.md): for the current control target (style faders and latent point) the
cache holds a render of every pitch in the model's range. An entry is *fresh* when it was rendered
for a target within ``jitter`` of the current one (largest difference over faders and latent
values), so a fader that wobbles by less than that does not cost a refill. In ``per-note`` z mode
each entry holds a note drawn with its own latent point, fresh until it is played once.

Threads: the audio thread only reads ``notes``/``fresh`` and appends to the lock-free deques
(``take``, ``request``), and wakes the renderer through a non-blocking pipe write; the renderer
and the control threads publish and retarget under :attr:`lock`, which the audio thread never
takes. Entries are replaced whole, never written in place, so a voice keeps playing the array it
started with.
"""

from __future__ import annotations

import os
import select
import threading
from collections import deque
from typing import NamedTuple

import numpy as np

N_PITCHES = 128


class Note(NamedTuple):
    """One rendered note at the output rate: ``wave [T]`` float32, and ``loop``, the frame a voice
    goes back to when it reaches the end of ``wave`` (a sustained note loops for as long as it is
    held; -1: the note plays once and ends, as a plucked or struck one does)."""

    wave: np.ndarray
    loop: int = -1


class RenderCache:
    """Per-pitch renders ``notes[p]`` (a :class:`Note` at the output rate, or None) and their freshness.

    ``played[p]`` is a note counter used to refill the most recently played pitches first;
    ``requests`` holds pitches the audio thread wants rendered now, ``arrivals`` the
    ``(pitch, note)`` pairs the renderer published since the audio thread last looked.
    """

    def __init__(self, pitch_range: tuple[int, int], jitter: float = 0.01):
        self.low, self.high = int(pitch_range[0]), int(pitch_range[1])
        self.jitter = float(jitter)
        self.lock = threading.Lock()
        self.notes: list[Note | None] = [None] * N_PITCHES
        # what each render was made for, as rows, so a retarget is a few array operations
        self.has_key = np.zeros(N_PITCHES, bool)
        self.key_styles = np.zeros((N_PITCHES, 0), np.float32)
        self.key_z = np.zeros((N_PITCHES, 0), np.float32)
        self.key_drawn = np.zeros(N_PITCHES, bool)     # a per-note draw (its z is its own)
        self.fresh = np.zeros(N_PITCHES, bool)
        self.used = np.zeros(N_PITCHES, bool)
        self.played = np.zeros(N_PITCHES, np.int64)
        self.requests: deque[int] = deque()
        self.arrivals: deque[tuple[int, Note]] = deque()
        self.target: tuple[np.ndarray, np.ndarray, bool] | None = None
        self.expected_ms = 1e9      # recent time of a priority render; the voices compare it to their budget
        self._notes = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def playable(self, pitch: int) -> bool:
        return self.low <= pitch <= self.high

    def pitches(self) -> range:
        return range(self.low, self.high + 1)

    # --- audio thread ----------------------------------------------------------------------
    def take(self, pitch: int) -> tuple[Note | None, bool]:
        """The render to play for a note-on of ``pitch`` and whether it is fresh.

        In per-note mode a fresh entry is used up by this note, and the next draw is requested.
        """
        self._notes += 1
        self.played[pitch] = self._notes
        note, fresh = self.notes[pitch], bool(self.fresh[pitch])
        if fresh and self.target is not None and self.target[2]:
            self.used[pitch] = True
            self.fresh[pitch] = False
            self.request(pitch)
        return note, fresh

    def request(self, pitch: int) -> None:
        """Ask for ``pitch`` to be rendered for the current target before anything else."""
        self.requests.append(pitch)
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:  # the pipe is full: the renderer has been woken already
            pass

    # --- renderer and control threads -------------------------------------------------------
    def wait(self, timeout: float) -> None:
        """Sleep until :meth:`wake` or ``timeout`` seconds."""
        ready, _, _ = select.select([self._wake_r], [], [], timeout)
        if ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _shape_keys(self, n_styles: int, n_z: int) -> None:
        if self.key_styles.shape[1] != n_styles or self.key_z.shape[1] != n_z:  # another model: no key matches
            self.key_styles = np.zeros((N_PITCHES, n_styles), np.float32)
            self.key_z = np.zeros((N_PITCHES, n_z), np.float32)
            self.has_key[:] = False

    def _close(self, rows: slice | np.ndarray) -> np.ndarray:
        """Whether the renders of pitches ``rows`` were made within ``jitter`` of the target."""
        styles, z, per_note = self.target
        close = self.has_key[rows] & (np.abs(self.key_styles[rows] - styles).max(axis=-1, initial=0.0) < self.jitter)
        if per_note:
            return close & self.key_drawn[rows]
        return close & ~self.key_drawn[rows] & (np.abs(self.key_z[rows] - z).max(axis=-1, initial=0.0) < self.jitter)

    def set_target(self, styles: np.ndarray, z: np.ndarray, per_note: bool) -> None:
        """Make ``(styles [S], z [D], per_note)`` the target; entries further than ``jitter`` go stale."""
        with self.lock:
            self.target = (np.asarray(styles, np.float32).copy(), np.asarray(z, np.float32).copy(), bool(per_note))
            self._shape_keys(len(styles), len(z))
            rows = slice(self.low, self.high + 1)
            close = self._close(rows)
            if per_note:
                close &= ~self.used[rows]
            self.fresh[rows] = close
        self.wake()

    def publish(self, pitches: list[int], notes: list[Note], key: tuple) -> None:
        """Store renders of ``pitches`` (distinct) made for ``key = (styles, z or None for per-note draws)``."""
        styles, z = key
        rows = np.asarray(pitches, np.int64)
        with self.lock:
            for p, note in zip(pitches, notes):
                self.notes[p] = note
            self._shape_keys(len(styles), self.key_z.shape[1] if z is None else len(z))
            self.has_key[rows] = True
            self.key_styles[rows] = styles
            self.key_drawn[rows] = z is None
            if z is not None:
                self.key_z[rows] = z
            self.used[rows] = False
            self.fresh[rows] = self._close(rows) if self.target is not None else False
        self.arrivals.extend(zip(pitches, notes))

    def pop_requests(self) -> list[int]:
        """Requested pitches not fresh any more, most recent request first, each once."""
        seen: list[int] = []
        while self.requests:
            p = self.requests.pop()
            if p not in seen and not self.fresh[p]:
                seen.append(p)
        return seen

    def stale(self) -> list[int]:
        """Pitches to refill, most recently played first."""
        stale = [p for p in self.pitches() if not self.fresh[p]]
        stale.sort(key=lambda p: -self.played[p])
        return stale

    def n_fresh(self) -> int:
        return int(self.fresh[self.low:self.high + 1].sum())

    def clear(self) -> None:
        """Forget every render (the output rate changed)."""
        with self.lock:
            self.notes = [None] * N_PITCHES
            self.has_key[:] = False
            self.fresh[:] = False
        self.wake()

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
