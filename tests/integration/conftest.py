"""The end-to-end tests' fixture: a real dummy JACK server of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest


@pytest.fixture
def jack_server():
    """A dummy-driver JACK server of its own name at 48 kHz, 256-frame periods; yields its name."""
    if shutil.which("jackd") is None:
        pytest.fail("jackd is not installed (make test installs jackd2)")
    name = f"waetest-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    ok = subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True).returncode == 0
    if not ok:
        proc.kill()
        pytest.fail("dummy JACK server did not start")
    old = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        yield name
    finally:
        if old is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = old
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        time.sleep(0.1)
