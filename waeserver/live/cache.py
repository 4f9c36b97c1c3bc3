"""The render-ahead cache: the rendered notes of every playable MIDI pitch, one per velocity
layer, at the output sample rate.

Policy (see docs/live.md): for the current control target (style faders and latent point) the
cache holds a render of every pitch in the model's range at each of its layers' velocities (a
note blends the two layers around its velocity). An entry is *fresh* when it was rendered for a
target within ``jitter`` of the current one (largest difference over faders and latent values),
so a fader that wobbles by less than that does not cost a refill. In ``per-note`` z mode each entry
holds a note drawn with its own latent point, fresh until it is played once.

Freshness is kept per layer (``fresh[p]`` has a bit per layer), so that a priority render need
only make the layers a note blends (see :class:`RenderCache`); a refill renders a pitch's layers
together, which levels them to one loudness (``waeserver.live.notes.shape_layers``).

Each target is a *generation* of renders (:meth:`VoicePool.timbre
<waeserver.live.voices.VoicePool.timbre>`): a time-tagged timbre change retargets ahead of its frame,
so that the renderer starts on the new target early, but the pool plays what is rendered for it only
to notes from the change's frame on; a note before plays the renders made before (the pool keeps
the latest of each pitch and layer beside the new one until the change's frame).

Threads: the cache lives on the renderer's and the control threads, under :attr:`lock`; the
audio thread (the C voice pool, :mod:`waeserver.live.voices`) sees only what the cache gives it once
attached: every render published into the pool, and the ``fresh`` and ``played`` arrays, which
are the pool's own memory. The pool asks for renders through its request ring and wakes the
renderer through a non-blocking pipe. Entries are replaced whole, never written in place, so a
voice keeps playing the array it started with.
"""

from __future__ import annotations

import os
import select
import threading
from typing import NamedTuple

import numpy as np

from waeserver.live.voices import N_PITCHES, R_TAKEN


class Note(NamedTuple):
    """One rendered note at the output rate: ``wave [T]`` float32, and ``loop``, the frame a voice
    goes back to when it reaches the end of ``wave`` (a sustained note loops for as long as it is
    held; -1: the note plays once and ends, as a plucked or struck one does)."""

    wave: np.ndarray
    loop: int = -1


class RenderCache:
    """Per-pitch renders ``notes[p]`` (a tuple of one :class:`Note` per layer at the output rate,
    softest first, None for a layer never rendered; or None) and their freshness (``fresh[p]``: a
    bit per layer); ``velocities`` are the layers' MIDI velocities.

    A pitch is *whole* when its layers were rendered in one batch and levelled together; a priority
    render of some of its layers (:meth:`pop_requests` says which) levels them with the gains and
    loop of the pitch's last whole render (:meth:`levels`), and leaves the pitch to the refill,
    which renders it whole again. ``played[p]`` is a note counter used to refill the most recently
    played pitches first.
    :meth:`attach` hands the cache to a :class:`~waeserver.live.voices.VoicePool`, whose note-ons ask
    for renders (:meth:`pop_requests`).
    """

    def __init__(self, pitch_range: tuple[int, int], jitter: float = 0.01, velocities=(100,)):
        self.low, self.high = int(pitch_range[0]), int(pitch_range[1])
        self.jitter = float(jitter)
        self.velocities = tuple(int(v) for v in velocities)
        self.all_layers = (1 << len(self.velocities)) - 1
        self._bits = (1 << np.arange(len(self.velocities))).astype(np.uint8)
        self.lock = threading.Lock()
        self.notes: list[tuple[Note | None, ...] | None] = [None] * N_PITCHES
        self.whole = np.zeros(N_PITCHES, bool)
        self._levels: list[tuple[tuple[float, ...], bool] | None] = [None] * N_PITCHES   # of the last whole render
        # what each layer's render was made for, as rows, so a retarget is a few array operations
        n = len(self.velocities)
        self.has_key = np.zeros((N_PITCHES, n), bool)
        self.key_styles = np.zeros((N_PITCHES, n, 0), np.float32)
        self.key_z = np.zeros((N_PITCHES, n, 0), np.float32)
        self.key_drawn = np.zeros((N_PITCHES, n), bool)     # a per-note draw (its z is its own)
        self.fresh = np.zeros(N_PITCHES, np.uint8)
        self.used = np.zeros(N_PITCHES, bool)
        self.played = np.zeros(N_PITCHES, np.int64)
        self.target: tuple[np.ndarray, np.ndarray, bool] | None = None
        self.generation = 0   # the target's render generation (the pool's, once attached)
        self.pool = None
        self._expected_ms = 1e9
        self._changed = threading.Event()   # wake() for a refill thread that leaves requests to another
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def playable(self, pitch: int) -> bool:
        return self.low <= pitch <= self.high

    def pitches(self) -> range:
        return range(self.low, self.high + 1)

    def nbytes(self) -> int:
        """Bytes of samples held, every pitch and layer."""
        return sum(note.wave.nbytes for layers in self.notes if layers is not None for note in layers if note)

    def is_fresh(self, pitch: int) -> bool:
        """Every layer of ``pitch`` fresh."""
        return int(self.fresh[pitch]) == self.all_layers

    def levels(self, pitch: int) -> tuple[tuple[float, ...], bool] | None:
        """The layer gains and loop decision of ``pitch``'s last whole render (None: none yet)."""
        return self._levels[pitch]

    @property
    def expected_ms(self) -> float:
        """Recent time of a priority render; the voices compare it to their latency budget."""
        return self._expected_ms

    @expected_ms.setter
    def expected_ms(self, ms: float) -> None:
        self._expected_ms = float(ms)
        if self.pool is not None:
            self.pool.params.expected_ms = self._expected_ms

    def attach(self, pool) -> None:
        """Give ``pool`` every render held and play from now on what this cache publishes (a model
        swap attaches the new cache, filled, to the pool the old one fed)."""
        old = pool.cache
        if old is not None and old is not self:   # the pool's memory is ours from now on
            with old.lock:
                old.fresh, old.played, old.pool = old.fresh.copy(), old.played.copy(), None
        with self.lock:
            pool.set_layers(self.velocities)
            for p in self.pitches():
                if self.notes[p] is not None:
                    pool.publish(p, self.notes[p])
            pool.fresh[:] = self.fresh
            pool.played[:] = self.played
            self.fresh, self.played = pool.fresh, pool.played
            pool.params.low, pool.params.high = self.low, self.high
            pool.params.per_note = self.target is not None and self.target[2]
            pool.params.expected_ms = self._expected_ms
            pool.params.wake_fd = self._wake_w
            self.generation = pool.generation   # what it published: the pool's latest
            self.pool = pool
            pool.cache = self

    def wake(self) -> None:
        self._changed.set()
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:  # the pipe is full: the renderer has been woken already
            pass

    # --- renderer and control threads -------------------------------------------------------
    def wait_for_change(self, timeout: float) -> None:
        """Sleep until :meth:`wake` or ``timeout`` seconds, not woken by note-on requests (the
        refill thread, while the priority renders have a thread of their own)."""
        self._changed.wait(timeout)
        self._changed.clear()

    def wait(self, timeout: float) -> None:
        """Sleep until :meth:`wake`, a note-on's request (the pool writes the same pipe) or
        ``timeout`` seconds."""
        ready, _, _ = select.select([self._wake_r], [], [], timeout)
        if ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _shape_keys(self, n_styles: int, n_z: int) -> None:
        if self.key_styles.shape[2] != n_styles or self.key_z.shape[2] != n_z:  # another model: no key matches
            n = len(self.velocities)
            self.key_styles = np.zeros((N_PITCHES, n, n_styles), np.float32)
            self.key_z = np.zeros((N_PITCHES, n, n_z), np.float32)
            self.has_key[:] = False

    def _close(self, rows: slice | np.ndarray) -> np.ndarray:
        """Whether each layer's render of pitches ``rows`` was made within ``jitter`` of the target
        (``[pitches, layers]``)."""
        styles, z, per_note = self.target
        close = self.has_key[rows] & (np.abs(self.key_styles[rows] - styles).max(axis=-1, initial=0.0) < self.jitter)
        if per_note:
            return close & self.key_drawn[rows]
        return close & ~self.key_drawn[rows] & (np.abs(self.key_z[rows] - z).max(axis=-1, initial=0.0) < self.jitter)

    def _fresh_bits(self, close: np.ndarray) -> np.ndarray:
        return (close.astype(np.uint8) * self._bits).sum(axis=-1).astype(np.uint8)

    def set_target(self, styles: np.ndarray, z: np.ndarray, per_note: bool) -> None:
        """Make ``(styles [S], z [D], per_note)`` the target, a new generation of renders (from the
        next period, or, called inside the pool's ``at(frame)``, from that frame); entries further than
        ``jitter`` go stale."""
        with self.lock:
            self.target = (np.asarray(styles, np.float32).copy(), np.asarray(z, np.float32).copy(), bool(per_note))
            self.generation = self.pool.timbre() if self.pool is not None else self.generation + 1
            if self.pool is not None:
                self.pool.params.per_note = bool(per_note)
            self._shape_keys(len(styles), len(z))
            rows = slice(self.low, self.high + 1)
            close = self._close(rows)
            if per_note:
                close &= ~self.used[rows, None]
            self.fresh[rows] = self._fresh_bits(close)
        self.wake()

    def target_now(self) -> tuple[np.ndarray, np.ndarray, bool, int] | None:
        """``(styles, z, per_note, generation)`` of the target, read together (None before the first)."""
        with self.lock:
            return None if self.target is None else (*self.target, self.generation)

    def publish(self, pitches: list[int], notes: list[tuple[Note, ...]], key: tuple, layers=None,
                levels=None) -> None:
        """Store renders of ``pitches`` (distinct) made for ``key = (styles, z or None for per-note
        draws[, generation])`` (without one, the latest generation's): every layer of each, or with
        ``layers`` the layers (indices) of each pitch's notes. ``levels`` gives, for each pitch
        rendered whole, its layers' gains and loop (see :meth:`levels`)."""
        styles, z = key[:2]
        generation = key[2] if len(key) > 2 else None
        every = tuple(range(len(self.velocities)))
        layers = [every] * len(pitches) if layers is None else [tuple(ls) for ls in layers]
        with self.lock:
            self._shape_keys(len(styles), self.key_z.shape[2] if z is None else len(z))
            for i, (p, note, ls) in enumerate(zip(pitches, notes, layers)):
                held = list(self.notes[p] or (None,) * len(every))
                for layer, n in zip(ls, note):
                    held[layer] = n
                self.notes[p] = tuple(held)
                # before it is marked fresh, which the pool reads at once
                published = self.pool is None or self.pool.publish(p, note, ls, generation)
                cols = list(ls)
                self.has_key[p, cols] = published
                self.key_styles[p, cols] = styles
                self.key_drawn[p, cols] = z is None
                if z is not None:
                    self.key_z[p, cols] = z
                self.whole[p] = ls == every and published
                if levels is not None and levels[i] is not None:
                    self._levels[p] = levels[i]
            rows = np.asarray(pitches, np.int64)
            self.used[rows] = False
            self.fresh[rows] = self._fresh_bits(self._close(rows)) if self.target is not None else 0

    def extend(self, pitch: int, layers: tuple[int, ...], heads: tuple[Note, ...], wholes: tuple[Note, ...]) -> None:
        """Renders of ``pitch``'s ``layers`` published as their first parts (``heads``) are now
        ``wholes``, the same arrays grown (a priority render in two parts): voices playing a head go
        on into the whole note, and the cache holds it, unless a newer render replaced it meanwhile."""
        with self.lock:
            held = list(self.notes[pitch] or (None,) * len(self.velocities))
            for layer, head, whole in zip(layers, heads, wholes):
                if held[layer] is head:
                    held[layer] = whole
                if self.pool is not None:
                    self.pool.extend(head, whole)
            self.notes[pitch] = tuple(held)

    def has_requests(self) -> bool:
        return self.pool is not None and self.pool.has_requests()

    def pop_requests(self) -> dict[int, int]:
        """Requested pitches with layers not fresh any more, most recent request first, each once, to
        the layers to render (a bit each: those the notes blend, not yet fresh) (the renderer's
        thread only). A per-note draw the pool used up is requested too, every layer."""
        asked = self.pool.requests() if self.pool is not None else []
        wanted: dict[int, int] = {}
        for kind, p, ls in reversed(asked):
            if kind == R_TAKEN:
                self.used[p] = True
                ls = self.all_layers
            missing = ls & ~int(self.fresh[p]) & self.all_layers
            if missing:
                wanted[p] = wanted.get(p, 0) | missing
        return wanted

    def stale(self) -> list[int]:
        """Pitches to refill (a layer not fresh, or not rendered whole), most recently played first."""
        stale = [p for p in self.pitches() if not self.is_fresh(p) or not self.whole[p]]
        stale.sort(key=lambda p: -self.played[p])
        return stale

    def n_fresh(self) -> int:
        """Pitches with every layer fresh."""
        return int((self.fresh[self.low:self.high + 1] == self.all_layers).sum())

    def clear(self) -> None:
        """Forget every render (the output rate changed)."""
        with self.lock:
            self.notes = [None] * N_PITCHES
            self.has_key[:] = False
            self.whole[:] = False
            self.fresh[:] = 0
            if self.pool is not None:
                self.pool.clear()
        self.wake()

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
