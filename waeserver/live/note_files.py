"""``/wae/render``: one note with the current controls, written to ``render_dir/NAME.wav``.

A patch that wants the model's notes in its own sampler (scsynth's ``Buffer``, Max's
``buffer~``, Pd's ``soundfiler``) asks for a file. The note is made by the same model call as the
live voices (``bundle.synthesize`` at the note's pitch, velocity, faders and latent point, then
resampled to the daemon's output rate, JACK's, so that a sampler on the same JACK server plays it
at pitch), and shaped as a voice's note that does not loop: a 1 ms fade-in, its trailing silence
cut, a 10 ms fade-out. It is written as a mono 32-bit float WAV to a temporary file in the folder
and renamed over ``NAME.wav``, so a reader never sees a torn file.

The daemon renders files on a thread of its own, one at a time (``PENDING_MAX`` waiting at most),
in its own process: the render process belongs to the voices' refills, and one note costs a few
milliseconds. The audio path is C and never waits for it; OSC replies may wait that long.
Offline (``waeserver render``) a file is written at once, on the virtual clock.

The folder is bounded: after every write the oldest ``*.wav`` files (by modification time) are
removed until the folder holds at most ``max_mb`` megabytes; the file just written is kept.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from waeserver.dsp.resample import to_rate
from waeserver.live.controls import MIDI_MAX, ControlError
from waeserver.live.jobs import JobThread
from waeserver.live.notes import shape_note
from waeserver.live.presets import PresetError, check_name

log = logging.getLogger(__name__)

PENDING_MAX = 8   # renders waiting behind the one in progress; more are refused


@torch.inference_mode()
def render_note(bundle, pitch: int, velocity: int, styles: np.ndarray, z: np.ndarray, rate: int) -> np.ndarray:
    """One note of ``bundle`` at ``rate`` Hz, ``[T]`` float32, as a voice would play it unlooped."""
    dev = bundle.device
    wave = bundle.synthesize(torch.tensor([pitch], dtype=torch.int64, device=dev),
                             torch.tensor([velocity / MIDI_MAX], dtype=torch.float32, device=dev),
                             torch.from_numpy(np.asarray(styles, np.float32)[None]).to(dev),
                             torch.from_numpy(np.asarray(z, np.float32)[None]).to(dev))
    wave = to_rate(wave.float().cpu().numpy(), bundle.sample_rate, rate)[0]
    return shape_note(wave, rate, loop=False).wave


class NoteFiles:
    """Rendered note files in ``folder`` (created when needed), at most ``max_mb`` megabytes of
    them; ``threaded``: rendered on a thread of this object's (the daemon), else at once."""

    def __init__(self, folder: str | Path, max_mb: float, threaded: bool = True):
        self.folder = Path(folder).expanduser().absolute()
        self.max_bytes = int(max_mb * 1e6)
        self.threaded = threaded
        self.removed = 0   # files removed to keep the bound
        self._jobs = JobThread("waeserver-notefiles", self._run, PENDING_MAX, "renders")

    def path(self, name: str) -> Path:
        """Where render ``name`` goes; refuses a bad name or a folder that cannot be written."""
        try:
            check_name(name, "render")
        except PresetError as exc:
            raise ControlError(str(exc)) from None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ControlError(f"cannot use render_dir {self.folder}: {exc.strerror or exc}") from None
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise ControlError(f"cannot write to render_dir {self.folder}")
        return self.folder / f"{name}.wav"

    def submit(self, make: Callable[[], tuple[np.ndarray, int]], path: Path,
               done: Callable[[Path | None, int, int, str | None], None]) -> None:
        """Render ``make()`` (samples, rate) to ``path``, then ``done(path, frames, rate, None)``, or
        ``done(None, 0, 0, message)`` when it fails; ControlError when too many wait."""
        if not self.threaded:
            self._run(make, path, done)
            return
        self._jobs.submit(make, path, done)

    def _run(self, make, path: Path, done) -> None:
        try:
            wave, rate = make()
            self.write(path, wave, rate)
        except OSError as exc:
            done(None, 0, 0, f"cannot write {path}: {exc.strerror or exc}")
            return
        except Exception as exc:   # a failing render must not end the thread
            log.exception("render of %s failed", path.name)
            done(None, 0, 0, f"render failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            return
        done(path, len(wave), rate, None)

    def write(self, path: Path, wave: np.ndarray, rate: int) -> None:
        """``wave`` as ``path`` (atomically), then the oldest files removed past the bound."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                sf.write(f, wave, rate, format="WAV", subtype="FLOAT")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.prune(keep=path)

    def prune(self, keep: Path) -> None:
        files = []
        for p in self.folder.glob("*.wav"):
            try:
                st = p.stat()
            except OSError:   # removed meanwhile
                continue
            files.append((st.st_mtime_ns, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files, key=lambda f: f[0]):
            if total <= self.max_bytes:
                break
            if p == keep:
                continue
            try:
                p.unlink()
            except OSError as exc:
                log.warning("cannot remove old render %s: %s", p, exc.strerror or exc)
                continue
            total -= size
            self.removed += 1
