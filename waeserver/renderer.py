"""The renderer thread: the only owner of the model while the daemon runs.

With a :class:`RenderWorker` (the daemon) the model itself runs in a process of its own and this
thread only prepares the inputs and publishes the results, so the model's Python work never holds
the daemon's interpreter lock while OSC replies and notifications wait; without one (offline
rendering, tests) it runs the model in this process. It turns control targets into notes in the
:class:`~waeserver.cache.RenderCache`: first the pitches the audio thread asked for (a note-on
that found no fresh render), all in one batch, then the stale rest, most recently played pitches
first, in batches of up to ``batch`` pitches that take no longer than the latency budget (so a
note-on waits at most that long behind a refill). Every pitch is rendered at each of the cache's
velocity layers in the same batch. It reads the *latest* control state before every batch, so a
fader morph at any message rate costs at most one batch in flight and never a queue of states.
Each render is resampled once from the model's rate to the output rate and given a 1 ms fade-in
and a 10 ms fade-out, so voices can start and end on it without a click; a note that sustains
gets a loop instead of its end, and a pitch's layers are levelled to one loudness (see
:func:`shape_note`, :func:`shape_layers`).

A render process that dies is replaced once; one that dies again soon after is not, and the
model then runs in this process (see :class:`Renderer`).

:meth:`Renderer.load_model` loads, warms and fills a new bundle beside the running one and swaps
it in between two batches; the voices keep playing the arrays they hold, so there is no gap.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import scipy.fft
import torch

from waeserver.cache import Note, RenderCache
from waeserver.faders import ControlState
from waeserver.voices import MAX_LAYERS

log = logging.getLogger(__name__)

FADE_IN_S = 0.001
FADE_OUT_S = 0.010
SILENCE = 1e-4       # trailing samples below this are cut, so voices end when the note has
PRIORITY_MAX = 16    # pitches in one priority batch
VELOCITIES = (40, 80, 120)  # MIDI velocities of the layers when a card names none: the datasets' p, mf, ff
LAYER_GAIN_MAX = 16.0  # most a layer is raised to the level of its pitch's loudest (a near-silent one is not)
WORKER_NICE = 19  # where SCHED_IDLE is not available: JACK's and the daemon's threads go first
RESTART_WINDOW_S = 60.0  # a render process that dies within this long of the last death is not replaced
REFILL_DUTY = 0.5    # share of one core refills may take, so a morph leaves room for the audio
LOOP_S = (0.35, 0.75)  # inside the held part of every preset's notes (0.8 s and longer)
LOOP_XFADE_S = 0.08    # the loop's end is crossfaded into the frames before its start
STEADY = (0.8, 1.7)  # a note loops when its level at the loop's end over its level at the start is in here
LEVEL_S = 0.1        # the stretch over which those levels are measured


RESAMPLE_PAD = 1024  # zeros after a note before its transform, so that the transform's wrap-around meets silence


def to_rate(wave: np.ndarray, from_rate: int, to_rate_hz: int) -> np.ndarray:
    """Resample ``wave [B,T]`` from ``from_rate`` to ``to_rate_hz`` by the exact ratio, band-limited
    in the frequency domain: twice as fast as a polyphase filter here, and within -60 dB of one."""
    if from_rate == to_rate_hz:
        return wave.astype(np.float32, copy=False)
    ratio = Fraction(to_rate_hz, from_rate).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    n = wave.shape[-1]
    blocks = scipy.fft.next_fast_len(-(-(n + RESAMPLE_PAD) // down))   # lengths with small factors only
    n_in, n_out = blocks * down, blocks * up
    spectrum = scipy.fft.rfft(wave, n=n_in, axis=-1, workers=1)
    out = np.zeros(wave.shape[:-1] + (n_out // 2 + 1,), spectrum.dtype)
    k = min(spectrum.shape[-1], out.shape[-1])
    out[..., :k] = spectrum[..., :k]
    if n_out > n_in and n_in % 2 == 0:   # the input's Nyquist bin stands for two bins of the output
        out[..., n_in // 2] *= 0.5
    wave = scipy.fft.irfft(out, n=n_out, axis=-1, workers=1)[..., :-(-n * up // down)]
    return (wave * (n_out / n_in)).astype(np.float32)


def layer_velocities(bundle) -> tuple[int, ...]:
    """The MIDI velocities to render one velocity layer at for ``bundle``: those it was trained on
    (its card's ``attributes.velocities``; at most ``MAX_LAYERS``, spread over them), else
    ``VELOCITIES``; one layer when its decoder ignores velocity."""
    card = bundle.card
    if not (card.get("model") or {}).get("use_velocity", True):
        return (VELOCITIES[-1],)
    given = (card.get("attributes") or {}).get("velocities")
    try:
        found = sorted({int(v) for v in given if 1 <= int(v) <= 127 and int(v) == v})
    except (TypeError, ValueError):
        found = []
    if not found:
        return VELOCITIES
    if len(found) > MAX_LAYERS:
        found = [found[int(i)] for i in np.linspace(0, len(found) - 1, MAX_LAYERS).round()]
    return tuple(found)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _drift(wave: np.ndarray, rate: int) -> float:
    """A note's RMS over the loop's last ``LEVEL_S`` over its RMS over the first (0: no loop fits)."""
    start, end, n_level = int(LOOP_S[0] * rate), int(LOOP_S[1] * rate), int(LEVEL_S * rate)
    first = _rms(wave[start:start + n_level])
    return _rms(wave[end - n_level:end]) / first if len(wave) >= end and first > SILENCE else 0.0


def shape_note(wave: np.ndarray, rate: int, loop: bool | None = None) -> Note:
    """One note ``[T]`` made ready for the voices: a new contiguous array with a 1 ms fade-in.

    A note that holds steady over ``LOOP_S`` (its RMS over the loop's last ``LEVEL_S`` within
    ``STEADY`` of its RMS over the first), or that ``loop`` says should loop, ends at the loop's end.
    Its loop is levelled (a gain
    ramp makes the end as loud as the start, so holding it does not pump) and the loop's last
    ``LOOP_XFADE_S`` are crossfaded into the frames just before the loop's start, so that going
    back to the start is seamless: it sounds for as long as it is held, and its release is the
    voice's envelope. The crossfade is linear, scaled by the two segments' correlation so that it
    keeps their level whether they are in phase (no swell) or not (no dip). Any other note
    (plucked, struck, decaying, short, or ``loop`` False) loses its trailing silence and gets a
    10 ms fade-out.
    """
    start, end = int(LOOP_S[0] * rate), int(LOOP_S[1] * rate)
    x = int(LOOP_XFADE_S * rate)
    drift = _drift(wave, rate)
    if (STEADY[0] <= drift <= STEADY[1] if loop is None else loop) and drift > 0.0:
        note = np.array(wave[:end], np.float32)
        note[start:] *= np.linspace(1.0, 1.0 / drift, end - start, dtype=np.float32)
        tail, lead = note[end - x:].astype(np.float64), wave[start - x:start].astype(np.float64)
        r = max(0.0, float(np.dot(tail, lead)) / max(np.linalg.norm(tail) * np.linalg.norm(lead), 1e-12))
        w = np.linspace(0.0, 1.0, x)
        gain = 1.0 / np.sqrt((1 - w) ** 2 + w ** 2 + 2 * r * w * (1 - w))
        note[end - x:] = (tail * (1 - w) + lead * w) * gain
        loop_at = start
    else:
        loud = np.flatnonzero(np.abs(wave) > SILENCE)
        last = int(loud[-1]) + 1 if len(loud) else 1
        fade_out = int(FADE_OUT_S * rate)
        note = np.array(wave[:min(len(wave), last + fade_out)], np.float32)
        n_out = min(len(note), fade_out)
        note[len(note) - n_out:] *= np.linspace(1.0, 0.0, n_out, dtype=np.float32)
        loop_at = -1
    n_in = min(len(note), max(1, int(FADE_IN_S * rate)))
    note[:n_in] *= np.linspace(0.0, 1.0, n_in + 1, dtype=np.float32)[1:]
    return Note(note, loop_at)


Levels = tuple[tuple[float, ...], bool]   # a pitch's layer gains and whether its layers loop


def shape_layers(waves: np.ndarray, rate: int, levels: Levels | None = None) -> tuple[tuple[Note, ...], Levels]:
    """The velocity layers ``[L,T]`` of one pitch, softest first, made ready for the voices; and
    their levels.

    Each layer is brought to the level of the loudest (RMS over the note's first ``LOOP_S[1]``;
    raised at most ``LAYER_GAIN_MAX``), so that the velocity curve alone sets a note's level and the
    layers only its timbre. They loop or not together, as most of them would on their own, so that
    a voice blending two of them holds or decays as one note. Some layers of a pitch alone (a
    priority render) take the gains and loop of ``levels``, those of the pitch's last whole render,
    one gain per layer given.
    """
    if levels is None:
        head = int(LOOP_S[1] * rate)
        rms = [_rms(w[:head]) for w in waves]
        top = max(rms)
        gains = tuple(min(top / level, LAYER_GAIN_MAX) if level > SILENCE and top > SILENCE else 1.0 for level in rms)
        steady = sum(STEADY[0] <= _drift(w, rate) <= STEADY[1] for w in waves)
        levels = gains, 2 * steady > len(waves)
    gains, loop = levels
    return tuple(shape_note(w * np.float32(g), rate, loop) for w, g in zip(waves, gains)), levels


@torch.inference_mode()
def synthesize_notes(bundle, pitches: list[int], velocities, styles: np.ndarray, zs: np.ndarray,
                     rate: int, layers=None, levels=None) -> list[tuple[tuple[Note, ...], Levels]]:
    """Notes of ``bundle`` at ``rate`` Hz, shaped for the voices, one per MIDI velocity of
    ``velocities`` for each pitch (one batch): ``styles [B,S]``, ``zs [B,D]``; with ``layers``, only
    the layers (indices into ``velocities``) given for each pitch, levelled by its ``levels`` (see
    :func:`shape_layers`; None for a pitch rendered whole). Each pitch's notes and levels."""
    dev = bundle.device
    layers = [tuple(range(len(velocities)))] * len(pitches) if layers is None else [tuple(ls) for ls in layers]
    levels = [None] * len(pitches) if levels is None else levels
    counts = [len(ls) for ls in layers]
    rows = lambda a: torch.from_numpy(np.repeat(a, counts, axis=0)).to(dev)  # noqa: E731  (each layer of a pitch)
    vel = [velocities[layer] for ls in layers for layer in ls]
    wave = bundle.synthesize(rows(np.asarray(pitches, np.int64)),
                             torch.tensor(vel, dtype=torch.float32, device=dev).div(127), rows(styles), rows(zs))
    wave = to_rate(wave.float().cpu().numpy(), bundle.sample_rate, rate)
    starts = np.cumsum([0] + counts)
    return [shape_layers(wave[a:b], rate, lv) for a, b, lv in zip(starts[:-1], starts[1:], levels)]


def _worker_main(conn, path: str, device: str, rate: int, velocities: tuple[int, ...]) -> None:
    """The render process: load the bundle, say how long a note can be, map the note bank the
    daemon made for that, then answer each ``(pitches, styles, zs, layers, levels)`` by writing the
    notes (the layers of each pitch, in turn) into the bank's rows and sending ``(loop, length)`` for
    each, and each pitch's levels (see RenderWorker, :func:`synthesize_notes`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the daemon's to handle
    try:   # a core only when nothing else wants it: JACK's threads and the daemon's preempt it at once
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, WORKER_NICE)
        except OSError:
            pass
    from waeserver.bundle import load_bundle

    try:
        bundle = load_bundle(path, device)
        if bundle.device.type == "cpu":
            torch.set_num_threads(1)
        synthesize_notes(bundle, [bundle.pitch_range[0]], velocities, np.eye(len(bundle.styles), dtype=np.float32)[:1],
                         np.zeros((1, bundle.latent_size), np.float32), rate)
    except Exception as exc:
        conn.send(str(exc) or type(exc).__name__)
        return
    cols = int(np.ceil(bundle.n_samples * rate / bundle.sample_rate)) + 16
    conn.send(cols)
    fd = os.open(conn.recv(), os.O_RDWR)
    bank = np.frombuffer(mmap.mmap(fd, 0), np.float32).reshape(-1, cols)
    os.close(fd)
    conn.send(None)
    while True:   # until the daemon terminates this process
        job = conn.recv()
        try:
            done = synthesize_notes(bundle, job[0], velocities, job[1], job[2], rate, job[3], job[4])
            notes = [note for layers, _ in done for note in layers]
            for row, note in zip(bank, notes):   # the daemon sends at most a bank of pitches
                row[:len(note.wave)] = note.wave
        except Exception as exc:
            conn.send(str(exc) or type(exc).__name__)
            continue
        conn.send(([(note.loop, len(note.wave)) for note in notes], [levels for _, levels in done]))


class WorkerDied(RuntimeError):
    """The render process is gone (killed, crashed): the message says how it ended."""


class RenderWorker:
    """The model in a process of its own, so that its Python work never holds the daemon's
    interpreter lock while OSC replies and notifications wait for it.

    Notes come back through a shared *note bank* (a row of samples for every layer of
    ``BANK_PITCHES`` pitches, a memory-mapped file unlinked as soon as both processes have it), and
    only ``(loop, length)`` pairs through the pipe: the daemon then copies each note out in one
    call (sending the samples through the pipe made the renderer thread take the interpreter lock
    back after every socket read). ``velocities`` are the layers' MIDI velocities."""

    BANK_PITCHES = 16

    def __init__(self, path: str, device: str, rate: int, velocities: tuple[int, ...] = VELOCITIES):
        self.path, self.device, self.rate, self.velocities = str(path), str(device), rate, tuple(velocities)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child, str(path), str(device), rate, self.velocities),
                                 name="waeserver-render", daemon=True)
        self._proc.start()
        child.close()
        try:
            answer = self._conn.recv()
            if isinstance(answer, int):
                answer = self._share_bank(answer)
        except EOFError:
            answer = "the render process died while loading"
        if answer is not None:
            self.close()
            raise RuntimeError(answer)

    def _share_bank(self, cols: int):
        """Make the note bank ``[BANK_PITCHES * layers, cols]`` and have the worker map it; its answer."""
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="waeserver-notes-", dir=folder)
        rows = self.BANK_PITCHES * len(self.velocities)
        try:
            os.ftruncate(fd, rows * cols * 4)
            self._bank = np.frombuffer(mmap.mmap(fd, 0), np.float32).reshape(rows, cols)
            self._conn.send(path)
            return self._conn.recv()
        finally:
            os.close(fd)
            os.unlink(path)   # both processes hold their mappings; nothing is left on disk

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.is_alive()   # also reaps a process that has ended: no zombie

    def how_it_ended(self) -> str:
        self._proc.join(1.0)
        code = self._proc.exitcode
        if code is None:
            return "its pipe closed"
        if code < 0:
            try:
                return f"killed by signal {-code} ({signal.Signals(-code).name})"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def render(self, pitches: list[int], styles: np.ndarray, zs: np.ndarray, layers=None,
               levels=None) -> list[tuple[tuple[Note, ...], Levels]]:
        """The layers of ``pitches`` (``styles [B,S]``, ``zs [B,D]``, ``layers``, ``levels``), as
        :func:`synthesize_notes`; :class:`WorkerDied` when the process is gone."""
        done = []
        every = tuple(range(len(self.velocities)))
        layers = [every] * len(pitches) if layers is None else layers
        levels = [None] * len(pitches) if levels is None else levels
        for i in range(0, len(pitches), self.BANK_PITCHES):
            rows = slice(i, i + self.BANK_PITCHES)
            try:
                self._conn.send((list(pitches[rows]), styles[rows], zs[rows], layers[rows], levels[rows]))
                reply = self._conn.recv()
            except (EOFError, OSError):   # a live worker never closes its end: it is gone
                raise WorkerDied(f"the render process (pid {self.pid}) is gone: {self.how_it_ended()}") from None
            if isinstance(reply, str):
                raise RuntimeError(f"render failed: {reply}")
            shapes, got = reply
            flat = [Note(self._bank[j, :length].copy(), loop) for j, (loop, length) in enumerate(shapes)]
            starts = np.cumsum([0] + [len(ls) for ls in layers[rows]])
            done += [(tuple(flat[a:b]), lv) for a, b, lv in zip(starts[:-1], starts[1:], got)]
        return done

    def close(self) -> None:
        """Stop the process now; a render in progress is thrown away."""
        self._proc.terminate()
        self._proc.join(0.5)
        self._conn.close()


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
                 seed: int | None = None, slice_ms: float = 10.0, worker: RenderWorker | None = None):
        self.bundle = bundle
        self.worker = worker
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
    def render(self, pitches: list[int], layers=None) -> tuple[list[tuple[Note, ...]], tuple, list, list]:
        """Render ``pitches`` for the current target (with ``layers``, a tuple of layer indices for each
        pitch, only those: levelled as the pitch's last whole render, else whole): their layers'
        notes at ``rate``, the target's key, the layers rendered and the levels of the whole ones."""
        styles, z, per_note = self.target()
        b = len(pitches)
        every = tuple(range(len(self.cache.velocities)))
        layers = [every] * b if layers is None else list(layers)
        known = [None if ls == every else self.cache.levels(p) for p, ls in zip(pitches, layers)]
        layers = [every if lv is None else ls for ls, lv in zip(layers, known)]   # no levels yet: whole
        if per_note:
            zs = self.rng.standard_normal((b, len(z))).astype(np.float32)
        else:
            zs = np.repeat(z[None], b, axis=0)
        rows = np.repeat(styles[None], b, axis=0)
        key = (styles, None if per_note else z)
        worker = self.worker
        done = None
        if worker is not None:
            try:
                done = worker.render(pitches, rows, zs, layers, known)
            except WorkerDied as exc:
                self._worker_died(worker, str(exc))
        if done is None:
            done = synthesize_notes(self.bundle, pitches, self.cache.velocities, rows, zs, self.rate, layers, known)
        levels = [lv if ls == every else None for (_, lv), ls in zip(done, layers)]
        return [notes for notes, _ in done], key, layers, levels

    def set_rate(self, rate: int) -> None:
        """Render at ``rate`` Hz from now on (the render process is started again for it)."""
        self.rate = int(rate)
        if self.worker is not None and self.worker.rate != self.rate:
            old = self.worker
            self.worker = RenderWorker(old.path, old.device, self.rate, old.velocities)
            old.close()

    # --- a render process that dies -------------------------------------------------------------
    def _tell(self, mode: str) -> None:
        self.render_mode = mode
        for hook in self.on_worker:
            hook(mode)

    def _worker_died(self, worker: RenderWorker, why: str) -> None:
        """``worker`` is gone: render here from now on, and start a new process unless the last one
        died less than ``RESTART_WINDOW_S`` ago (this thread only)."""
        if worker is not self.worker:
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

    def render_now(self, pitches, priority: bool = True) -> None:
        """Render ``pitches`` and publish them to the cache: every layer of each, or for a mapping
        of pitches to layer bits (:meth:`RenderCache.pop_requests`) those layers."""
        t0 = time.perf_counter()
        pitches, layers = list(pitches), self._layers(pitches)
        notes, key, layers, levels = self.render(pitches, layers)
        self.cache.publish(pitches, notes, key, layers, levels)
        ms = (time.perf_counter() - t0) * 1000.0
        if priority:
            self.render_ms.append(ms)
            self.cache.expected_ms = ms if self.cache.expected_ms > 1e8 else 0.8 * self.cache.expected_ms + 0.2 * ms
        else:
            per_pitch = ms / len(pitches)
            self.pitch_ms = per_pitch if self.pitch_ms is None else 0.8 * self.pitch_ms + 0.2 * per_pitch

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
        for _ in range(3):   # a priority render: the two layers of a note between them, as a note at 100
            self.render_now({p: 0b11 << max(0, len(self.cache.velocities) - 2)})

    def step(self) -> bool:
        """One unit of work: a priority batch, else one refill batch. False when there was none."""
        if self._swap is not None:
            self._apply_swap()
        if self._replacement is not None:
            self._adopt()
        wanted = self.cache.pop_requests()
        if wanted:
            self.render_now(dict(list(wanted.items())[:PRIORITY_MAX]))
            return True
        stale = self.cache.stale()
        if stale:
            self.render_now(stale[:self.refill_batch()], priority=False)
            return True
        return False

    # --- thread ------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="waeserver-renderer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 0.2) -> None:
        self._stop.set()
        self.cache.wake()
        for worker in (self.worker, self._replacement):
            if worker is not None:
                worker.close()       # also ends a render the thread may be waiting for
        if self._thread is not None:
            self._thread.join(timeout)

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
            if not busy:
                self.cache.wait(0.1)
            elif not self.cache.has_requests():
                # refills take at most REFILL_DUTY of a core; a note-on request wakes us at once
                self.cache.wait((time.perf_counter() - t0) * (1.0 / REFILL_DUTY - 1.0))
            self._check_worker()

    # --- model swap --------------------------------------------------------------------------
    def load_model(self, path: str, device: str, done: Callable[[str | None], None]) -> None:
        """Load, warm and fill the bundle at ``path`` on a thread of its own, then swap it in.

        ``done(None)`` after the swap, ``done(message)`` when the bundle is refused (nothing changes).
        """
        def work():
            from waeserver.bundle import load_bundle

            worker = None
            try:
                bundle = load_bundle(path, device)   # checks the bundle before a process is started
                velocities = layer_velocities(bundle)
                if use_worker:
                    worker = RenderWorker(path, device, self.rate, velocities)
                cache = RenderCache(bundle.pitch_range, self.cache.jitter, velocities)
                ahead = Renderer(bundle, self.state, cache, self.rate, self.batch, slice_ms=self.slice_ms,
                                 worker=worker)
                ahead.retarget()
                ahead.warm_up()
                seconds = ahead.fill()
            except Exception as exc:
                if worker is not None:
                    worker.close()
                self._loading.release()   # before the reply, so the sender may try again at once
                log.warning("model load refused: %s", exc)
                done(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                return
            log.info("model %s loaded and rendered ahead in %.2f s", path, seconds)
            self._swap = (bundle, cache, worker, done)
            self.cache.wake()

        if not self._loading.acquire(blocking=False):
            done("another model is loading")
            return
        use_worker = self._worker_args is not None   # the daemon's way, even while rendering here
        threading.Thread(target=work, name="waeserver-loader", daemon=True).start()

    def _apply_swap(self) -> None:
        bundle, cache, worker, done = self._swap
        self._swap = None
        self._loading.release()
        for old in (self.worker, self._replacement):
            if old is not None:
                old.close()
        self._replacement, self._generation = None, self._generation + 1
        self.bundle, self.cache, self.worker, self.pitch_ms = bundle, cache, worker, None
        if worker is not None:   # a fresh start: its first death is replaced again
            self._worker_args, self._last_death = (worker.path, worker.device, worker.velocities), None
            if self.render_mode != "process":
                self._tell("process")
        for hook in self.on_swap:
            hook(bundle, cache)
        self.state.rebind(bundle.styles, bundle.latent_size)
        done(None)
