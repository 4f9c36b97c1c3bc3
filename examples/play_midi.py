"""Play a MIDI file into the daemon in real time, over OSC or over JACK MIDI.

    python examples/play_midi.py song.mid                 # OSC to 127.0.0.1:57130
    python examples/play_midi.py song.mid --jack          # JACK MIDI into waeserver:midi_in

Over OSC only notes travel (`/wae/noteon`, `/wae/noteoff`; CC120 and CC123 become `/wae/panic`),
since the OSC address space has no raw MIDI. Over JACK every channel message travels (sustain,
pitch bend, CCs, program changes), sample-accurate to the JACK period. Either way the daemon is
silenced at the end or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import queue
import sys
import time

import jack
import mido
from pythonosc.udp_client import SimpleUDPClient


def osc_messages(message: mido.Message) -> list[tuple[str, list]]:
    """The OSC messages [(address, args), ...] that stand for one MIDI message."""
    if message.type == "note_on" and message.velocity > 0:
        return [("/wae/noteon", [message.note, message.velocity])]
    if message.type in ("note_on", "note_off"):
        return [("/wae/noteoff", [message.note])]
    if message.type == "control_change" and message.control in (120, 123):
        return [("/wae/panic", [])]
    return []


class JackMidiOut:
    """A JACK client with one MIDI output port, fed from any thread through a queue.

    Messages queued between two periods go out at the start of the next one.
    """

    def __init__(self, destination: str, client_name: str = "wae-play-midi"):
        self.pending: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.client = jack.Client(client_name, no_start_server=True)
        self.port = self.client.midi_outports.register("out")
        self.client.set_process_callback(self._process)
        self.client.activate()
        self.client.connect(self.port, destination)

    def _process(self, frames: int) -> None:
        self.port.clear_buffer()
        while True:
            try:
                data = self.pending.get_nowait()
            except queue.Empty:
                return
            self.port.write_midi_event(0, data)

    def send(self, message: mido.Message) -> None:
        self.pending.put(bytes(message.bytes()))

    def silence(self) -> None:
        """CC123 (all notes off) on every channel."""
        for channel in range(16):
            self.send(mido.Message("control_change", channel=channel, control=123, value=0))

    def close(self) -> None:
        # give the process callback a few periods to write what is still queued
        deadline = time.monotonic() + 8 * self.client.blocksize / self.client.samplerate + 0.1
        while not self.pending.empty() and time.monotonic() < deadline:
            time.sleep(0.005)
        self.client.deactivate()
        self.client.close()


class OscOut:
    """Notes as OSC messages to the daemon."""

    def __init__(self, host: str, port: int):
        self.client = SimpleUDPClient(host, port)

    def send(self, message: mido.Message) -> None:
        for address, values in osc_messages(message):
            self.client.send_message(address, values)

    def silence(self) -> None:
        self.client.send_message("/wae/panic", [])

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("midi_file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=57130)
    parser.add_argument("--jack", action="store_true", help="send over JACK MIDI instead of OSC")
    parser.add_argument("--jack-dest", default="waeserver:midi_in", help="JACK MIDI input to connect to")
    args = parser.parse_args(argv)

    try:
        song = mido.MidiFile(args.midi_file)
    except (OSError, EOFError, ValueError) as exc:
        print(f"play_midi: cannot read {args.midi_file}: {exc}", file=sys.stderr)
        return 1

    if args.jack:
        try:
            out = JackMidiOut(args.jack_dest)
        except jack.JackError as exc:  # no server, no such port
            print(f"play_midi: JACK: {exc}", file=sys.stderr)
            return 1
    else:
        out = OscOut(args.host, args.port)

    try:
        for message in song.play():
            out.send(message)
    except KeyboardInterrupt:
        pass
    finally:
        out.silence()
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
