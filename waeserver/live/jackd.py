"""The JACK server the daemon plays through: found, or started when none runs (ALSA where there is
a sound card, else the dummy driver), and started again if it was ours and exits."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _has_sound_card() -> bool:
    try:
        text = Path("/proc/asound/cards").read_text()
    except OSError:
        return False
    return bool(text.strip()) and "no soundcards" not in text


def ensure_jack(server: str | None) -> tuple[int, int, subprocess.Popen | None]:
    """The JACK server's rate and period; starts ``jackd`` first when none runs (then also its process)."""
    import jack

    try:
        probe = jack.Client("waeserver-probe", no_start_server=True, servername=server)
    except jack.JackOpenError:
        probe, proc = start_jackd(server)
    else:
        proc = None
    rate, period = probe.samplerate, probe.blocksize
    probe.close()
    return rate, period, proc


def start_jackd(server: str | None):
    import jack

    if shutil.which("jackd") is None:
        raise OSError("no JACK server is running and jackd is not installed (apt install jackd2)")
    name = server or os.environ.get("JACK_DEFAULT_SERVER")
    drivers = [("alsa", ["-d", "alsa", "-r", "48000", "-p", "256"])] if _has_sound_card() else []
    drivers.append(("dummy", ["-d", "dummy", "-r", "48000", "-p", "256"]))  # realtime where allowed
    for driver, cmd in drivers:
        argv = ["jackd", *(["-n", name] if name else []), *cmd]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                probe = jack.Client("waeserver-probe", no_start_server=True, servername=server)
            except jack.JackOpenError:
                time.sleep(0.2)
                continue
            log.warning("no JACK server was running: started jackd%s with the %s driver at %d Hz, %d frames",
                        f" -n {name}" if name else "", driver, probe.samplerate, probe.blocksize)
            return probe, proc
        proc.terminate()
        proc.wait(5)
    raise OSError("no JACK server is running and jackd would not start")
