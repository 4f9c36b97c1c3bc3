"""Write examples/song.mid: a short phrase that exercises the live engine's MIDI handling.

Eight bars at 100 bpm on channel 1: a melody over held chords, the sustain pedal across a bar,
a pitch bend up and back, and a fader moved by CC1 (mapped to a style in examples/config.yaml).
Run ``python examples/make_song.py`` to write it again.
"""

from __future__ import annotations

from pathlib import Path

import mido

TICKS = 480          # per beat
BPM = 100


def phrase() -> list[tuple[int, mido.Message]]:
    """``(absolute tick, message)`` pairs."""
    beat = TICKS
    events = []

    def note(start: float, length: float, pitch: int, velocity: int) -> None:
        events.append((int(start * beat), mido.Message("note_on", note=pitch, velocity=velocity)))
        events.append((int((start + length) * beat), mido.Message("note_off", note=pitch, velocity=0)))

    chords = [(48, 55, 64), (45, 52, 60), (41, 48, 57), (43, 50, 59)]
    for bar, chord in enumerate(chords * 2):
        for pitch in chord:
            note(bar * 4, 3.9, pitch, 70)
    melody = [72, 74, 76, 79, 77, 76, 74, 72, 71, 72, 74, 72, 69, 71, 72, 67]
    for i, pitch in enumerate(melody * 2):
        note(i, 0.9, pitch, 96 if i % 4 == 0 else 84)
    events.append((8 * beat, mido.Message("control_change", control=64, value=127)))    # pedal down
    events.append((12 * beat, mido.Message("control_change", control=64, value=0)))     # pedal up
    for step in range(17):                                                               # bend up, back
        value = int(4096 * (1 - abs(step - 8) / 8))
        events.append((int((20 + step / 8) * beat), mido.Message("pitchwheel", pitch=value)))
    for step in range(33):                                                               # CC1 sweep
        events.append((int((16 + step / 2) * beat), mido.Message("control_change", control=1, value=step * 127 // 32)))
    return events


def write(path: Path) -> Path:
    song = mido.MidiFile(ticks_per_beat=TICKS)
    track = mido.MidiTrack()
    song.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(BPM)))
    now = 0
    for tick, msg in sorted(phrase(), key=lambda e: (e[0], e[1].type != "note_off")):
        track.append(msg.copy(time=tick - now))
        now = tick
    song.save(path)
    return path


if __name__ == "__main__":
    print(write(Path(__file__).resolve().parent / "song.mid"))
