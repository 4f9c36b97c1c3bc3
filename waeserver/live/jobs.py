"""Work the daemon does off the OSC and audio threads, one job at a time in order, on a thread of its
own started with the first job; a bounded number wait, more are refused (note files, sampling)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from waeserver.live.controls import ControlError


class JobThread:
    """``run(*job)`` for each job :meth:`submit` posts; ``pending`` may wait behind the one running.
    ``run`` must not raise (a job that fails reports it through its own callback)."""

    def __init__(self, name: str, run: Callable[..., None], pending: int, what: str):
        self.name, self.what = name, what
        self._run = run
        self._jobs: queue.Queue = queue.Queue(pending)
        self._thread: threading.Thread | None = None

    def submit(self, *job) -> None:
        """Queue ``job``; ControlError (nothing queued) when ``pending`` already wait."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise ControlError(f"{self._jobs.maxsize + 1} {self.what} are already waiting; "
                               "try again when they are done") from None
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            self._run(*self._jobs.get())
