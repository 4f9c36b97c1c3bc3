"""Notes for the voices: a priority render handed over in two parts begins as the whole render."""

from __future__ import annotations

import numpy as np
import pytest

from waeserver.live.notes import head_length, synthesize_in_two, synthesize_notes
from waeserver.sound.bundle import load_bundle

RATE = 48000


@pytest.fixture(scope="module")
def bundle():
    return load_bundle("gm-orchestra", "cpu")


def test_the_head_is_the_start_of_the_whole_note(bundle):
    """The shipped bundle's trumpet and flute at two layers: the first part is the whole render's
    first ``head_length`` samples to within -70 dB of the note's peak (the resampler's rounding and
    its truncation of the first part; about -80 dB measured), so the voices go on from one to the
    other without a step; and the call after it gives the whole render itself."""
    styles = np.eye(len(bundle.styles), dtype=np.float32)[[bundle.styles.index(s) for s in ("trumpet", "flute")]]
    zs = np.zeros((2, bundle.latent_size), np.float32)
    pitches, layers = [60, 72], [(1, 2), (0, 1)]
    whole = synthesize_notes(bundle, pitches, (40, 80, 120), styles, zs, RATE)
    levels = [(tuple(lv[0][i] for i in ls), lv[1]) for (_, lv), ls in zip(whole, layers)]
    heads, rest = synthesize_in_two(bundle, pitches, (40, 80, 120), styles, zs, RATE, layers, levels)
    expected = synthesize_notes(bundle, pitches, (40, 80, 120), styles, zs, RATE, layers, levels)
    n = head_length(RATE)
    assert [len(h) for h in heads] == [2, 2]
    for got, (notes, _) in zip(heads, expected):
        for head, note in zip(got, notes):
            assert head.shape == (n,) and head.dtype == np.float32
            peak = np.abs(note.wave).max()
            assert peak > 1e-3
            assert np.abs(head - note.wave[:n]).max() < 3e-4 * peak
    for (notes, lv), (ref, ref_lv) in zip(rest(), expected):
        assert lv == ref_lv
        for note, r in zip(notes, ref):
            assert note.loop == r.loop and np.array_equal(note.wave, r.wave)


def test_no_head_without_levels_or_from_an_inverter_that_makes_whole_notes_only(bundle):
    styles = np.eye(len(bundle.styles), dtype=np.float32)[:1]
    zs = np.zeros((1, bundle.latent_size), np.float32)
    heads, rest = synthesize_in_two(bundle, [60], (40, 80, 120), styles, zs, RATE, [(0, 1, 2)], [None])
    assert heads is None and len(rest()[0][0]) == 3
    bundle.default_inverter, was = "mcnn", bundle.default_inverter
    try:
        levels = [((1.0,), False)]
        heads, rest = synthesize_in_two(bundle, [60], (40, 80, 120), styles, zs, RATE, [(2,)], levels)
        assert heads is None and len(rest()[0][0]) == 1
    finally:
        bundle.default_inverter = was
