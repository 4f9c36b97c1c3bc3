"""MIDI parsing by the voice pool (velocity curve, channel filter, pedals, bend, garbage) and the
control messages it hands on (CC map, learn, program change)."""

from __future__ import annotations

import numpy as np
import pytest

from waeserver.live.cache import Note
from waeserver.live.midi import MidiControls, MidiSettings, curve_exponent, open_inputs
from waeserver.live.voices import FREE, PLAYING, RELEASED, VoicePool, velocity_gain

RATE = 48000
PERIOD = 256
WAVE = (0.5 * np.sin(2 * np.pi * 220.0 * np.arange(RATE) / RATE)).astype(np.float32)


@pytest.fixture
def pool():
    """A pool with a fresh render (a sine) of pitches 60 to 64, its MIDI controls into a list."""
    pool = VoicePool(RATE, polyphony=4)
    for p in range(60, 65):
        assert pool.publish(p, Note(WAVE, -1))
        pool.fresh[p] = True
    pool.controls = []
    pool.settings = MidiSettings(cc_map={1: "style:flute"})
    pool.on_control = MidiControls(pool.controls.append, pool.settings).handle
    return pool


def play(pool, *messages, queued: bool = False) -> np.ndarray:
    """One period with ``(offset, bytes)`` MIDI messages (``queued``: through :meth:`VoicePool.midi`,
    as a mido input hands them, at the period's start)."""
    out = np.zeros(PERIOD, np.float32)
    if queued:
        for _, data in messages:
            pool.midi(data)
        pool.run(out)
    else:
        pool.run(out, [(at, "midi", (data,)) for at, data in messages])
    return out


def sounding(pool) -> dict[int, int]:
    return {v.pitch: v.state for v in pool.voices if v.state != FREE}


def test_velocity_curves():
    assert velocity_gain(127, curve_exponent("linear")) == 1.0
    assert velocity_gain(64, 1.0) == pytest.approx(64 / 127)
    assert velocity_gain(64, curve_exponent("hard")) == pytest.approx((64 / 127) ** 2)
    assert velocity_gain(64, curve_exponent("soft")) > velocity_gain(64, 1.0)
    assert curve_exponent("1.5") == 1.5
    for bad in ("loud", 0.0, 50, None):
        with pytest.raises(ValueError, match="velocity curve"):
            curve_exponent(bad)


def test_notes_velocity_zero_and_offsets(pool):
    pool.set_velocity_curve(curve_exponent("hard"))
    out = play(pool, (17, bytes([0x90, 60, 100])), (20, bytes([0x93, 61, 0])), (30, bytes([0x80, 60, 64])))
    assert not out[:17].any()
    np.testing.assert_allclose(out[17:30], WAVE[:13] * velocity_gain(100, 2.0), rtol=1e-5, atol=1e-7)
    assert sounding(pool) == {60: RELEASED}        # released on frame 30, the velocity-0 note-on of 61 did nothing


def test_channel_filter(pool):
    pool.set_channel(2)
    play(pool, (0, bytes([0x90, 60, 100])), (0, bytes([0x91, 61, 100])))
    assert sounding(pool) == {61: PLAYING}


@pytest.mark.parametrize("queued", [False, True])
def test_pedals_bend_and_silencers(pool, queued):
    play(pool, (0, bytes([0xB0, 64, 64])), (1, bytes([0x90, 60, 127])), (2, bytes([0x80, 60, 0])), queued=queued)
    assert pool.sustain_on and sounding(pool) == {60: PLAYING}
    play(pool, (0, bytes([0xB0, 64, 63])), queued=queued)
    assert not pool.sustain_on and sounding(pool) == {60: RELEASED}
    play(pool, (0, bytes([0xE0, 0x7F, 0x7F])), queued=queued)
    assert pool.ratio == pytest.approx(2 ** (2 * 8191 / 8192 / 12))
    play(pool, (0, bytes([0xE0, 0, 0x40])), queued=queued)
    assert pool.ratio == 1.0
    play(pool, (0, bytes([0xB0, 64, 127])), (0, bytes([0x90, 62, 127])), (0, bytes([0x90, 63, 127])),
         (5, bytes([0xB0, 123, 0])), queued=queued)
    assert set(sounding(pool).values()) == {RELEASED} and not pool.sustain_on   # all notes off, pedal too
    play(pool, (0, bytes([0x90, 64, 127])), queued=queued)
    out = play(pool, (0, bytes([0xB0, 120, 0])), queued=queued)                # all sound off: 5 ms fades
    fade = int(0.005 * RATE)
    assert np.abs(out[fade // 2:fade]).max() > 0 and not out[fade:].any() and sounding(pool) == {}


def test_cc_map_learn_and_program_go_to_the_control_thread(pool):
    play(pool, (0, bytes([0xB0, 1, 127])), (0, bytes([0xB0, 2, 10])))   # mapped, then unmapped: ignored
    pool.settings.learn = "gain"
    play(pool, (0, bytes([0xB0, 21, 5])))      # bound by learn, not applied
    play(pool, (0, bytes([0xB0, 22, 5])), (0, bytes([0xC0, 7])))   # learn is over
    assert pool.controls == [("cc", "style:flute", 1.0), ("learn", 21, "gain"), ("program", 7)]
    assert pool.settings.learn is None and pool.settings.cc_map == {1: "style:flute", 21: "gain"}
    assert sounding(pool) == {} and pool.dropped == 0


@pytest.mark.parametrize("queued", [False, True])
@pytest.mark.parametrize("garbage", [b"", b"\x90", b"\x45\x10\x20", b"\x90\x80\x10", b"\x90\x3c",
                                     b"\xf8", b"\xf0\x01\x02\xf7", b"\xe0\x00\xff", bytes(range(256))])
def test_garbage_is_dropped(pool, garbage, queued):
    out = play(pool, (0, garbage), queued=queued)
    assert pool.dropped == 1 and not out.any() and sounding(pool) == {} and pool.controls == []
    assert pool.ratio == 1.0 and not pool.sustain_on


def test_missing_hardware_input_is_reported_not_fatal(pool, caplog):
    assert open_inputs(["no such controller 1234"], pool) == []
    assert "no such controller 1234" in caplog.text or "unavailable" in caplog.text
