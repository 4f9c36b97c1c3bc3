"""The render process: the model in a process of its own, its notes handed back through shared memory.

The daemon's renderer thread sends it control targets and copies finished notes out of a shared
note bank; the model's Python work never holds the daemon's interpreter lock meanwhile.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import signal
import tempfile

import numpy as np
import torch

from waeserver.live.cache import Note
from waeserver.live.notes import VELOCITIES, Levels, head_length, synthesize_in_two, synthesize_notes

WORKER_NICE = 19  # where SCHED_IDLE is not available: JACK's and the daemon's threads go first


def _lowest_priority() -> None:
    """A core only when nothing else wants it: JACK's threads and the daemon's preempt it at once."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, WORKER_NICE)
        except OSError:
            pass


def _worker_main(conn, path: str, device: str, rate: int, velocities: tuple[int, ...], background: bool) -> None:
    """The render process (``background``: at the lowest priority, for refills): load the bundle,
    say how long a note can be, map the note bank the daemon made for that, then answer each
    ``(pitches, styles, zs, layers, levels, in_two)`` by writing the notes (the layers of each pitch,
    in turn) into the bank's rows and sending ``(loop, length)`` for each, and each pitch's levels
    (see RenderWorker, :func:`synthesize_notes`). With ``in_two``, the notes' first parts go first,
    into the bank's head rows, with a ``("head", count)`` message (:func:`synthesize_in_two`),
    when the inverter can make them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the daemon's to handle
    if background:
        _lowest_priority()
    from waeserver.sound.bundle import load_bundle

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
    bank, heads_bank = _note_bank(mmap.mmap(fd, 0), len(velocities), cols, rate)
    os.close(fd)
    conn.send(None)
    while True:   # until the daemon terminates this process
        pitches, styles, zs, layers, levels, in_two = conn.recv()
        try:
            if in_two:
                heads, rest = synthesize_in_two(bundle, pitches, velocities, styles, zs, rate, layers, levels)
                if heads is not None:
                    flat = [head for each in heads for head in each]
                    heads_bank[:len(flat)] = flat
                    conn.send(("head", len(flat)))
                done = rest()
            else:
                done = synthesize_notes(bundle, pitches, velocities, styles, zs, rate, layers, levels)
            notes = [note for layers, _ in done for note in layers]
            for row, note in zip(bank, notes):   # the daemon sends at most a bank of pitches
                row[:len(note.wave)] = note.wave
        except Exception as exc:
            conn.send(str(exc) or type(exc).__name__)
            continue
        conn.send(([(note.loop, len(note.wave)) for note in notes], [levels for _, levels in done]))


def _note_bank(memory, n_layers: int, cols: int, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The note bank's views: a row of ``cols`` samples for each layer of ``BANK_PITCHES`` pitches,
    then as many rows of a note's first part (:func:`head_length`)."""
    rows = RenderWorker.BANK_PITCHES * n_layers
    floats = np.frombuffer(memory, np.float32)
    heads = floats[rows * cols:rows * (cols + head_length(rate))]
    return floats[:rows * cols].reshape(rows, cols), heads.reshape(rows, -1)


class WorkerDied(RuntimeError):
    """The render process is gone (killed, crashed): the message says how it ended."""


class RenderWorker:
    """The model in a process of its own, so that its Python work never holds the daemon's
    interpreter lock while OSC replies and notifications wait for it.

    Notes come back through a shared *note bank* (a row of samples for every layer of
    ``BANK_PITCHES`` pitches, and one of a note's first part, a memory-mapped file unlinked as soon
    as both processes have it), and only ``(loop, length)`` pairs through the pipe: the daemon then
    copies each note out in one call (sending the samples through the pipe made the renderer thread
    take the interpreter lock back after every socket read). ``velocities`` are the layers' MIDI
    velocities. A ``background`` process (the refills') runs at the lowest priority; the priority
    renders' own does not, since a note waits for it."""

    BANK_PITCHES = 16

    def __init__(self, path: str, device: str, rate: int, velocities: tuple[int, ...] = VELOCITIES,
                 background: bool = True):
        self.path, self.device, self.rate, self.velocities = str(path), str(device), rate, tuple(velocities)
        self.background = background
        self.renders = 0   # batches rendered
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, name="waeserver-render", daemon=True,
                                 args=(child, str(path), str(device), rate, self.velocities, background))
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
        self.cols = cols
        try:
            os.ftruncate(fd, rows * (cols + head_length(self.rate)) * 4)
            self._bank, self._heads = _note_bank(mmap.mmap(fd, 0), len(self.velocities), cols, self.rate)
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
        self._proc.join(3.0)   # a killed process's exit status can lag its pipe's end on a loaded machine
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
               levels=None, on_heads=None) -> list[tuple[tuple[Note, ...], Levels]]:
        """The layers of ``pitches`` (``styles [B,S]``, ``zs [B,D]``, ``layers``, ``levels``), as
        :func:`synthesize_notes`; :class:`WorkerDied` when the process is gone. With ``on_heads``,
        the notes' first parts are made first, where they can be (:func:`synthesize_in_two`), and
        ``on_heads(pitches, heads)`` hears them (per pitch a tuple of its layers' arrays) before the
        whole notes are made."""
        self.renders += 1
        done = []
        every = tuple(range(len(self.velocities)))
        layers = [every] * len(pitches) if layers is None else layers
        levels = [None] * len(pitches) if levels is None else levels
        for i in range(0, len(pitches), self.BANK_PITCHES):
            rows = slice(i, i + self.BANK_PITCHES)
            try:
                self._conn.send((list(pitches[rows]), styles[rows], zs[rows], layers[rows], levels[rows],
                                 on_heads is not None))
                reply = self._conn.recv()
                if isinstance(reply, tuple) and reply[0] == "head":
                    heads = [row.copy() for row in self._heads[:reply[1]]]
                    starts = np.cumsum([0] + [len(ls) for ls in layers[rows]])
                    on_heads(list(pitches[rows]), [tuple(heads[a:b]) for a, b in zip(starts[:-1], starts[1:])])
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
        try:
            self._conn.close()
        except OSError:   # its descriptor is gone already: nothing left to close
            pass
