"""Fixtures every layer's tests share: a real `tiny` dataset rendered with FluidSynth."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores are shared by the test process and the servers it starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The `tiny` preset rendered from TimGM6mb (78 notes, 3 styles)."""
    from waeserver.data.soundfont import render_dataset

    out = tmp_path_factory.mktemp("data") / "tiny"
    render_dataset("tiny", out, progress=False, workers=1)
    return out
