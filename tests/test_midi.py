"""MIDI parsing: velocity curve, channel filter, pedals, bend, CC map, learn, program change, garbage."""

from __future__ import annotations

import pytest

from waeserver.midi import MidiIn, MidiSettings, curve_exponent, open_inputs, velocity_gain


class Recorder:
    """Collects the voice actions a parser produces (the parser's output, not a stand-in for it)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


@pytest.fixture
def parsed():
    voices, controls = Recorder(), []
    settings = MidiSettings(cc_map={1: "style:flute"})
    return MidiIn(voices, controls.append, settings), voices.calls, controls, settings


def test_velocity_curves():
    assert velocity_gain(127, curve_exponent("linear")) == 1.0
    assert velocity_gain(64, 1.0) == pytest.approx(64 / 127)
    assert velocity_gain(64, curve_exponent("hard")) == pytest.approx((64 / 127) ** 2)
    assert velocity_gain(64, curve_exponent("soft")) > velocity_gain(64, 1.0)
    assert curve_exponent("1.5") == 1.5
    for bad in ("loud", 0.0, 50, None):
        with pytest.raises(ValueError, match="velocity curve"):
            curve_exponent(bad)


def test_notes_velocity_zero_and_offsets(parsed):
    midi, calls, _, _ = parsed
    midi.handle(bytes([0x90, 60, 127]), 17)
    midi.handle(bytes([0x93, 62, 0]), 20)        # note-on velocity 0 is a note-off, any channel
    midi.handle([0x80, 60, 64], 30)
    assert calls == [("note_on", 60, 1.0, 17), ("note_off", 62, 20), ("note_off", 60, 30)]


def test_channel_filter(parsed):
    midi, calls, _, settings = parsed
    settings.channel = 2
    midi.handle(bytes([0x90, 60, 100]))
    midi.handle(bytes([0x91, 61, 100]))
    assert [c[1] for c in calls] == [61]


def test_pedals_bend_and_silencers(parsed):
    midi, calls, _, _ = parsed
    for at, data in enumerate(([0xB0, 64, 64], [0xB0, 64, 63], [0xE0, 0x7F, 0x7F], [0xE0, 0, 0x40], [0xE0, 0, 0],
                               [0xB0, 120, 0], [0xB0, 123, 0])):
        midi.handle(bytes(data), at)
    assert calls == [("sustain", True, 0), ("sustain", False, 1), ("bend", 8191, 2), ("bend", 0, 3),
                     ("bend", -8192, 4), ("panic", 5), ("all_notes_off", 6)]


def test_cc_map_learn_and_program_go_to_the_control_thread(parsed):
    midi, calls, controls, settings = parsed
    midi.handle(bytes([0xB0, 1, 127]))
    midi.handle(bytes([0xB0, 2, 10]))             # unmapped: ignored
    settings.learn = "gain"
    midi.handle(bytes([0xB0, 21, 5]))             # bound by learn, not applied
    midi.handle(bytes([0xB0, 22, 5]))             # learn is over
    midi.handle(bytes([0xC0, 7]))
    assert controls == [("cc", "style:flute", 1.0), ("learn", 21, "gain"), ("program", 7)]
    assert settings.learn is None and calls == [] and settings.cc_map == {1: "style:flute", 21: "gain"}


@pytest.mark.parametrize("garbage", [b"", b"\x90", b"\x45\x10\x20", b"\x90\x80\x10", b"\x90\x3c",
                                     b"\xf8", b"\xf0\x01\x02\xf7", b"\xe0\x00\xff", bytes(range(256))])
def test_garbage_is_dropped(parsed, garbage):
    midi, calls, controls, _ = parsed
    midi.handle(garbage)
    assert calls == [] and controls == [] and midi.dropped == 1


def test_missing_hardware_input_is_reported_not_fatal(parsed, caplog):
    midi = parsed[0]
    assert open_inputs(["no such controller 1234"], midi) == []
    assert "no such controller 1234" in caplog.text or "unavailable" in caplog.text
