"""The renderer thread: the only owner of the model while the daemon runs.

With a :class:`~waeserver.live.render_worker.RenderWorker` (the daemon) the model itself runs in a
process of its own and this thread only prepares the inputs and publishes the results, so the
model's Python work never holds the daemon's interpreter lock while OSC replies and notifications
wait; without one (offline
rendering, tests) it runs the model in this process. It turns control targets into notes in the
:class:`~waeserver.live.cache.RenderCache`: first the pitches the audio thread asked for (a note-on
that found no fresh render), all in one batch, then the stale rest, most recently played pitches
first, in batches of up to ``batch`` pitches that take no longer than the latency budget (so a
note-on waits at most that long behind a refill). Every pitch is rendered at each of the cache's
velocity layers in the same batch. It reads the *latest* control state before every batch, so a
fader morph at any message rate costs at most one batch in flight and never a queue of states.
Each render is resampled once from the model's rate to the output rate and shaped for the
voices (waeserver.live.notes).

A render process that dies is replaced once; one that dies again soon after is not, and the
model then runs in this process (see :class:`Renderer`).

With a second render process for priority renders (``serve``'s default, ``priority_process``), a
thread of its own serves the note-on requests through it, so that a note never queues behind the
refill batch in progress; the refill thread then leaves requests alone. That process hands each
note over in two parts where it can (waeserver.live.notes.synthesize_in_two): its first
``HEAD_S`` is published as soon as it is made, in an array with room for the whole note, so the
waiting voices start on it; the rest is written after it in the same array and the render grows in
place (:meth:`RenderCache.extend`), long before a voice reaches the end of the first part. That process is not
replaced when it dies: the refill thread takes the requests back.

:meth:`Renderer.load_model` loads, warms and fills a new bundle beside the running one and swaps
it in between two batches; the voices keep playing the arrays they hold, so there is no gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from waeserver.live.cache import Note, RenderCache
from waeserver.live.controls import ControlState
from waeserver.live.notes import layer_velocities, synthesize_notes
from waeserver.live.render_worker import RenderWorker, WorkerDied

log = logging.getLogger(__name__)

PRIORITY_MAX = 16    # pitches in one priority batch
RESTART_WINDOW_S = 60.0  # a render process that dies within this long of the last death is not replaced
REFILL_DUTY = 0.5    # share of one core refills may take, so a morph leaves room for the audio


class Renderer:
    """Renders notes of ``bundle`` for the targets of ``state`` into ``cache`` at ``rate`` Hz, each
    pitch at every velocity layer of the cache (``cache.velocities``).

    Use it on its own thread (:meth:`start`, :meth:`stop`) in the daemon, or call
    :meth:`render_now` and :meth:`fill` directly on a virtual clock (offline rendering).
    ``batch`` is the most pitches in a refill batch; ``seed`` fixes the per-note latent draws.

    With a ``worker`` (the daemon), a render process that dies (``kill -9``, the OOM killer, a
    crashed driver) is noticed at the next render or within 0.1 s when idle: the renderer renders
    in its own process at once and starts a new render process, which takes over when it is ready.
    One that dies within ``RESTART_WINDOW_S`` of the last death is not replaced: rendering stays
    in this process until a model load starts a process for the new bundle. ``on_worker`` hooks
    hear each change of :attr:`render_mode`.
    """

    def __init__(self, bundle, state: ControlState, cache: RenderCache, rate: int, batch: int = 8,
                 seed: int | None = None, slice_ms: float = 10.0, worker: RenderWorker | None = None,
                 priority_worker: RenderWorker | None = None):
        self.bundle = bundle
        self.worker = worker
        self.priority_worker = priority_worker   # the priority renders' own process, or None
        self.priority_process = priority_worker is not None   # a model swap starts one for the new bundle
        self._priority_lock = threading.Lock()   # a priority render, or the swap of what it renders with
        self._priority_thread: threading.Thread | None = None
        self._rng_lock = threading.Lock()
        self.state = state
        self.cache = cache
        self.rate = int(rate)
        self.batch = int(batch)
        self.slice_ms = float(slice_ms)   # a refill batch should take no longer (the latency budget)
        self.pitch_ms: float | None = None  # recent refill time per pitch (all its layers)
        self.rng = np.random.default_rng(seed)
        self.render_ms: deque[float] = deque(maxlen=256)   # priority batches, for /wae/status
        self.on_swap: list[Callable[[object, RenderCache], None]] = []
        self.on_worker: list[Callable[[str], None]] = []
        self.render_mode = "process" if worker is not None else "in-process"
        self._worker_args = (worker.path, worker.device, worker.velocities) if worker is not None else None
        self._last_death: float | None = None
        self._replacement: RenderWorker | None = None   # a new render process, ready, for the thread to take
        self._generation = 0                            # bumped by a model swap: older replacements are dropped
        self._swap: tuple | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loading = threading.Lock()

    # --- targets -----------------------------------------------------------------------------
    def target(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """The state's faders and latent point in this bundle's style order and latent size."""
        with self.state.lock:
            names, styles, z, mode = self.state.style_names, self.state.styles, self.state.z, self.state.z_mode
        if names != list(self.bundle.styles):
            by_name = dict(zip(names, styles.tolist()))
            styles = np.array([by_name.get(n, 0.0) for n in self.bundle.styles], np.float32)
            if not styles.any():
                styles[0] = 1.0
        if len(z) != self.bundle.latent_size:
            z = np.zeros(self.bundle.latent_size, np.float32)
        return styles, z, mode == "per-note"

    def retarget(self) -> None:
        """Follow the control state (call after every change of faders, z or z mode)."""
        self.cache.set_target(*self.target())

    # --- rendering ---------------------------------------------------------------------------
    def render(self, pitches: list[int], layers=None, own_process: bool = False, on_heads=None
               ) -> tuple[list[tuple[Note, ...]], tuple, list, list]:
        """Render ``pitches`` for the current target (with ``layers``, a tuple of layer indices for each
        pitch, only those: levelled as the pitch's last whole render, else whole): their layers'
        notes at ``rate``, the target's key, the layers rendered and the levels of the whole ones. The
        target is the cache's (the one its generation was given for), else the state's. With
        ``own_process``, through the priority renders' process (:class:`WorkerDied` if it is gone),
        and there with ``on_heads``, which hears ``(pitches, key, layers, heads)`` for the notes' first
        parts as soon as they are made (see :meth:`RenderWorker.render`)."""
        target = self.cache.target_now()
        styles, z, per_note, generation = (*self.target(), None) if target is None else target
        b = len(pitches)
        every = tuple(range(len(self.cache.velocities)))
        layers = [every] * b if layers is None else list(layers)
        known = [None if ls == every else self.cache.levels(p) for p, ls in zip(pitches, layers)]
        layers = [every if lv is None else ls for ls, lv in zip(layers, known)]   # no levels yet: whole
        if per_note:
            with self._rng_lock:
                zs = self.rng.standard_normal((b, len(z))).astype(np.float32)
        else:
            zs = np.repeat(z[None], b, axis=0)
        rows = np.repeat(styles[None], b, axis=0)
        key = (styles, None if per_note else z, generation)
        worker = self.priority_worker if own_process else self.worker
        done = None
        if worker is not None:
            layers_of = dict(zip(pitches, layers))
            heads = None if on_heads is None or not own_process else \
                (lambda chunk, parts: on_heads(chunk, key, [layers_of[p] for p in chunk], parts))
            try:
                done = worker.render(pitches, rows, zs, layers, known, heads)
            except WorkerDied as exc:
                if own_process:
                    raise
                self._worker_died(worker, str(exc))
        if done is None:
            done = synthesize_notes(self.bundle, pitches, self.cache.velocities, rows, zs, self.rate, layers, known)
        levels = [lv if ls == every else None for (_, lv), ls in zip(done, layers)]
        return [notes for notes, _ in done], key, layers, levels

    def set_rate(self, rate: int) -> None:
        """Render at ``rate`` Hz from now on (the render processes are started again for it)."""
        self.rate = int(rate)
        if self.worker is not None and self.worker.rate != self.rate:
            old = self.worker
            self.worker = RenderWorker(old.path, old.device, self.rate, old.velocities, old.background)
            old.close()
        with self._priority_lock:
            old = self.priority_worker
            if old is not None and old.rate != self.rate:
                self.priority_worker = RenderWorker(old.path, old.device, self.rate, old.velocities, old.background)
                old.close()

    # --- a render process that dies -------------------------------------------------------------
    def _tell(self, mode: str) -> None:
        self.render_mode = mode
        for hook in self.on_worker:
            hook(mode)

    def _worker_died(self, worker: RenderWorker, why: str) -> None:
        """``worker`` is gone: render here from now on, and start a new process unless the last one
        died less than ``RESTART_WINDOW_S`` ago (this thread only)."""
        if worker is not self.worker or self._stop.is_set():   # stopping closes it: nothing to replace
            return
        self.worker = None
        worker.close()
        now, last = time.monotonic(), self._last_death
        self._last_death = now
        if last is not None and now - last < RESTART_WINDOW_S:
            log.error("%s, %.0f s after the last one died: not starting another; rendering in the daemon's "
                      "own process from now on (a model load starts a new one)", why, now - last)
            self._tell("in-process")
            return
        log.warning("%s: rendering in the daemon's own process while a new one starts", why)
        self._tell("restarting")
        self._start_replacement()

    def _start_replacement(self) -> None:
        path, device, velocities = self._worker_args
        rate, generation = self.rate, self._generation

        def work():
            try:
                worker = RenderWorker(path, device, rate, velocities)
            except Exception as exc:
                log.error("a new render process would not start (%s): rendering in the daemon's own process "
                          "from now on", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self._last_death = time.monotonic()
                self._tell("in-process")
                return
            if self._stop.is_set() or generation != self._generation:
                worker.close()
                return
            self._replacement = worker
            self.cache.wake()

        threading.Thread(target=work, name="waeserver-restart", daemon=True).start()

    def _adopt(self) -> None:
        """Take the new render process (between two batches)."""
        worker, self._replacement = self._replacement, None
        if worker.rate != self.rate:   # the output rate changed while it started: once more, at the new rate
            worker.close()
            self._start_replacement()
            return
        self.worker = worker
        log.info("a new render process (pid %d) renders again", worker.pid)
        self._tell("process")

    def _check_worker(self) -> None:
        worker = self.worker
        if worker is not None and not worker.alive():
            self._worker_died(worker, f"the render process (pid {worker.pid}) is gone: {worker.how_it_ended()}")

    def render_now(self, pitches, priority: bool = True, own_process: bool = False) -> None:
        """Render ``pitches`` and publish them to the cache: every layer of each, or for a mapping
        of pitches to layer bits (:meth:`RenderCache.pop_requests`) those layers (``own_process``:
        through the priority renders' process)."""
        t0 = time.perf_counter()
        pitches, layers = list(pitches), self._layers(pitches)
        heads: dict[int, tuple[Note, ...]] = {}
        head_ms = None

        def publish_heads(chunk, key, chunk_layers, parts):
            nonlocal head_ms
            notes = [tuple(self._head_note(part) for part in each) for each in parts]
            self.cache.publish(chunk, notes, key, chunk_layers)
            heads.update(zip(chunk, notes))
            head_ms = (time.perf_counter() - t0) * 1000.0   # what a waiting note waits for

        notes, key, layers, levels = self.render(pitches, layers, own_process, publish_heads)
        rest = [i for i, p in enumerate(pitches) if p not in heads]
        self.cache.publish([pitches[i] for i in rest], [notes[i] for i in rest], key, [layers[i] for i in rest],
                           [levels[i] for i in rest])
        for p, ls, whole in zip(pitches, layers, notes):
            if p in heads:
                self.cache.extend(p, ls, heads[p], tuple(self._grown(h, w) for h, w in zip(heads[p], whole)))
        ms = (time.perf_counter() - t0) * 1000.0 if head_ms is None else head_ms
        if priority:
            self.render_ms.append(ms)
            self.cache.expected_ms = ms if self.cache.expected_ms > 1e8 else 0.8 * self.cache.expected_ms + 0.2 * ms
        else:
            per_pitch = ms / len(pitches)
            self.pitch_ms = per_pitch if self.pitch_ms is None else 0.8 * self.pitch_ms + 0.2 * per_pitch

    def _head_note(self, head: np.ndarray) -> Note:
        """A note's first part, in an array with room for the whole note, which :meth:`_grown` fills."""
        room = np.empty(max(self.priority_worker.cols, len(head)), np.float32)
        room[:len(head)] = head
        return Note(room[:len(head)])

    @staticmethod
    def _grown(head: Note, whole: Note) -> Note:
        """``whole``, a note that begins as ``head``, in ``head``'s array: its samples after the first part."""
        n, room = len(head.wave), head.wave.base
        length = min(len(whole.wave), len(room))
        room[n:length] = whole.wave[n:length]
        return Note(room[:length], whole.loop)

    def _layers(self, pitches) -> list[tuple[int, ...]] | None:
        if not isinstance(pitches, dict):
            return None
        n = len(self.cache.velocities)
        return [tuple(layer for layer in range(n) if bits >> layer & 1) for bits in pitches.values()]

    def refill_batch(self) -> int:
        """Pitches in the next refill batch: up to ``batch``, as many as fit in ``slice_ms``, at least
        one, so a priority note never waits long behind a refill."""
        if self.pitch_ms is None:
            return 1
        return max(1, min(self.batch, int(self.slice_ms // max(self.pitch_ms, 1e-3))))

    def fill(self) -> float:
        """Render every stale pitch now, before any voice waits for one (so nothing arrives for the
        voices); returns the seconds it took."""
        t0 = time.perf_counter()
        while stale := self.cache.stale():
            self.render_now(stale[:self.batch], priority=False)
        return time.perf_counter() - t0

    def warm_up(self) -> None:
        """Run every batch shape once and measure a one-note priority render."""
        p = (self.cache.low + self.cache.high) // 2
        self.render([p] * self.batch)
        self.render_now([p], priority=False)   # its levels, for the priority renders below
        two = {p: 0b11 << max(0, len(self.cache.velocities) - 2)}   # the layers a note at 100 blends
        own = self.priority_worker is not None
        self.render(list(two), self._layers(two), own)   # that process's first render of the shape: untimed
        for _ in range(3):
            self.render_now(two, own_process=own)

    def step(self) -> bool:
        """One unit of work: a priority batch, else one refill batch. False when there was none."""
        if self._swap is not None:
            self._apply_swap()
        if self._replacement is not None:
            self._adopt()
        wanted = self._requests_left_to_us()
        if wanted:
            self.render_now(dict(list(wanted.items())[:PRIORITY_MAX]))
            return True
        stale = self.cache.stale()
        if stale:
            self.render_now(stale[:self.refill_batch()], priority=False)
            return True
        return False

    def _requests_left_to_us(self) -> dict[int, int]:
        """The note-on requests, unless the priority renders' thread serves them (it holds its lock
        while it renders, and has a process while it runs)."""
        if not self._priority_lock.acquire(blocking=False):
            return {}
        try:
            return self.cache.pop_requests() if self.priority_worker is None else {}
        finally:
            self._priority_lock.release()

    # --- threads -----------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="waeserver-renderer", daemon=True)
        self._thread.start()
        self._start_priority_thread()

    def _start_priority_thread(self) -> None:
        if self.priority_worker is not None and not (self._priority_thread and self._priority_thread.is_alive()):
            self._priority_thread = threading.Thread(target=self._run_priority, name="waeserver-priority",
                                                     daemon=True)
            self._priority_thread.start()

    def stop(self, timeout: float = 0.2) -> None:
        self._stop.set()
        self.cache.wake()
        for worker in (self.worker, self._replacement, self.priority_worker):
            if worker is not None:
                worker.close()       # also ends a render a thread may be waiting for
        for thread in (self._thread, self._priority_thread):
            if thread is not None:
                thread.join(timeout)

    def _run_priority(self) -> None:
        """The priority renders' thread: each note-on request at once, through their own process."""
        while not self._stop.is_set():
            with self._priority_lock:
                worker = self.priority_worker
                if worker is None:
                    return
                wanted = self.cache.pop_requests()
                if wanted:
                    try:
                        self.render_now(dict(list(wanted.items())[:PRIORITY_MAX]), own_process=True)
                    except WorkerDied as exc:
                        self._priority_died(worker, str(exc))
                        return
                    except Exception:   # as in the refill thread: the cache keeps what it has
                        if self._stop.is_set():
                            return
                        log.exception("priority render failed")
                    continue
                if not worker.alive():
                    self._priority_died(worker, f"the priority render process (pid {worker.pid}) is gone: "
                                                f"{worker.how_it_ended()}")
                    return
            self.cache.wait(0.1)

    def _priority_died(self, worker: RenderWorker, why: str) -> None:
        """The priority renders' process is gone (its thread, holding the lock): not replaced, the
        refill thread takes the requests back."""
        self.priority_worker = None
        worker.close()
        if not self._stop.is_set():
            log.warning("%s: the refill thread renders the notes that wait from now on", why)
        self.cache.wake()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                busy = self.step()
            except Exception:  # a failing render must not end the thread; the cache keeps what it has
                if self._stop.is_set():
                    return
                log.exception("render failed")
                busy = False
            # refills take at most REFILL_DUTY of a core; a note-on request wakes us at once, unless the
            # priority renders' thread takes them
            pause = 0.1 if not busy else (time.perf_counter() - t0) * (1.0 / REFILL_DUTY - 1.0)
            if self.priority_worker is not None:
                self.cache.wait_for_change(pause)
            elif not busy or not self.cache.has_requests():
                self.cache.wait(pause)
            self._check_worker()

    # --- model swap --------------------------------------------------------------------------
    def load_model(self, path: str, device: str, done: Callable[[str | None], None]) -> None:
        """Load, warm and fill the bundle at ``path`` on a thread of its own, then swap it in.

        ``done(None)`` after the swap, ``done(message)`` when the bundle is refused (nothing changes).
        """
        def work():
            from waeserver.sound.bundle import load_bundle

            worker = priority = None
            try:
                bundle = load_bundle(path, device)   # checks the bundle before a process is started
                velocities = layer_velocities(bundle)
                if use_worker:
                    worker = RenderWorker(path, device, self.rate, velocities)
                if use_worker and self.priority_process:
                    priority = RenderWorker(path, device, self.rate, velocities, background=False)
                cache = RenderCache(bundle.pitch_range, self.cache.jitter, velocities)
                ahead = Renderer(bundle, self.state, cache, self.rate, self.batch, slice_ms=self.slice_ms,
                                 worker=worker)
                ahead.retarget()
                ahead.warm_up()
                seconds = ahead.fill()
            except Exception as exc:
                for started in (worker, priority):
                    if started is not None:
                        started.close()
                self._loading.release()   # before the reply, so the sender may try again at once
                log.warning("model load refused: %s", exc)
                done(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                return
            log.info("model %s loaded and rendered ahead in %.2f s", path, seconds)
            self._swap = (bundle, cache, worker, priority, done)
            self.cache.wake()

        if not self._loading.acquire(blocking=False):
            done("another model is loading")
            return
        use_worker = self._worker_args is not None   # the daemon's way, even while rendering here
        threading.Thread(target=work, name="waeserver-loader", daemon=True).start()

    def _apply_swap(self) -> None:
        bundle, cache, worker, priority, done = self._swap
        self._swap = None
        self._loading.release()
        with self._priority_lock:   # no priority render meanwhile: it would publish the old bundle's notes
            for old in (self.worker, self._replacement, self.priority_worker):
                if old is not None:
                    old.close()
            self._replacement, self._generation = None, self._generation + 1
            self.bundle, self.cache, self.worker, self.pitch_ms = bundle, cache, worker, None
            self.priority_worker = priority
        if self._thread is not None:
            self._start_priority_thread()   # when the old bundle's had died
        if worker is not None:   # a fresh start: its first death is replaced again
            self._worker_args, self._last_death = (worker.path, worker.device, worker.velocities), None
            if self.render_mode != "process":
                self._tell("process")
        for hook in self.on_swap:
            hook(bundle, cache)
        self.state.rebind(bundle.styles, bundle.latent_size)
        done(None)
