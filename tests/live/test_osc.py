"""The OSC address table on a real instrument (no JACK), and the UDP server with real sockets."""

from __future__ import annotations

import itertools
import math
import re
import socket
import time

import numpy as np
import pytest
import torch
from bundles import make_test_bundle
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from waeserver import __version__
from waeserver.live.config import validate
from waeserver.live.instrument import Instrument
from waeserver.live.osc import ADDRESSES, Commands, encode
from waeserver.live.osc_server import OscServer
from waeserver.live.timing import encode_bundle
from waeserver.live.voices import FREE, PLAYING
from waeserver.sound.bundle import load_bundle

ME = ("127.0.0.1", 40000)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    first = make_test_bundle(root / "osc-test")
    second = make_test_bundle(root / "other", styles=("oboe", "piano"), latent=2, seed=1)
    corrupt = make_test_bundle(root / "corrupt")
    weights = corrupt / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return {"first": load_bundle(first, "cpu"), "second": second, "corrupt": corrupt}


@pytest.fixture
def inst(models, tmp_path):
    inst = Instrument(models["first"], validate({"preset_dir": str(tmp_path / "presets"), "device": "cpu"}), 48000)
    for p in (60, 64):
        inst.renderer.render_now([p], priority=False)
    return inst


@pytest.fixture
def commands(inst):
    sent = []
    cmds = Commands(inst, lambda dest, address, args: sent.append((dest, address, args)))
    cmds.sent = sent
    return cmds


def period(inst) -> np.ndarray:
    out = np.zeros(256, np.float32)
    inst.pool.run(out)
    return out


def test_the_table_is_the_contract(commands):
    """Every handler has its spec in ADDRESSES (docs/reference.md is generated from it) and the
    argument counts the table checks are those the spec's type tags allow."""
    missing, stale = sorted(set(commands.table) - set(ADDRESSES)), sorted(set(ADDRESSES) - set(commands.table))
    assert not missing, (f"add an OscSpec(tags, args, effect, reply) for {missing} to waeserver.live.osc.ADDRESSES, "
                         "then run `python -m waeserver.cli.reference` to regenerate docs/reference.md")
    assert not stale, f"ADDRESSES describes {stale}, which Commands.table has no handler for"
    for address, (_, low, high, _) in commands.table.items():
        lengths = {n for n in range(9) if any(re.fullmatch(ADDRESSES[address].tags, "".join(tags))
                                              for tags in itertools.product("ifs", repeat=n))}
        assert (min(lengths), max(lengths)) == (low, high if high is not None else 8), \
            f"{address}: the table takes {low} to {high} arguments, its spec's tags {lengths}"


def test_notes_start_and_stop_voices(commands, inst):
    assert commands.apply("/wae/note", [60]) == []
    assert commands.apply("/wae/noteon", [64.0, 90]) == []     # a whole float is an int
    period(inst)
    playing = {v.pitch: v for v in inst.pool.voices if v.state == PLAYING}
    assert set(playing) == {60, 64} and playing[60].gain == pytest.approx(100 / 127)
    commands.apply("/wae/noteon", [64, 0])
    commands.apply("/wae/noteoff", [60])
    period(inst)
    assert not any(v.held for v in inst.pool.voices if v.state != FREE)
    commands.apply("/wae/note", [60, 127, 0.01])
    for _ in range(4):
        period(inst)
    assert not any(v.held for v in inst.pool.voices if v.state != FREE)
    commands.apply("/wae/panic", [])
    for _ in range(3):
        period(inst)
    assert inst.pool.sounding() == 0


def test_controls(commands, inst):
    s = inst.state
    commands.apply("/wae/style", ["flute", 1.5])
    assert s.styles.tolist() == [1.0, 1.5, 0.0]
    commands.apply("/wae/styles", [0.0, 0.5, 2])
    assert s.styles.tolist() == [0.0, 0.5, 2.0]
    commands.apply("/wae/mix", ["violin", 0.25, "piano", 1.0])
    assert s.styles.tolist() == [1.0, 0.0, 0.25]
    commands.apply("/wae/z", [0.5, -1.0, 2.0])
    assert s.z.tolist() == [0.5, -1.0, 2.0]
    commands.apply("/wae/z/random", [7])
    first = s.z.copy()
    commands.apply("/wae/z/random", [7])
    assert np.array_equal(first, s.z) and not np.array_equal(first, [0.5, -1.0, 2.0])
    commands.apply("/wae/z/mode", ["per-note"])
    assert s.z_mode == "per-note" and inst.cache.target[2]
    commands.apply("/wae/gain", [0.5])
    commands.apply("/wae/release", [1.25])
    commands.apply("/wae/bend_range", [12])
    assert (inst.pool.gain, inst.pool.release, inst.pool.bend_range) == (0.5, 1.25, 12.0)
    assert not inst.cache.fresh.any()          # every change above left the cache to refill


REFUSED = [
    ("/wae/nope", [], "unknown address /wae/nope"),
    ("/wae/note", [], "expected 1 to 3 arguments, got 0"),
    ("/wae/note", [60, 100, 1.0, 4], "expected 1 to 3 arguments, got 4"),
    ("/wae/note", ["60"], "pitch must be an int"),
    ("/wae/note", [60.5], "pitch must be a whole number"),
    ("/wae/note", [128], "pitch 128 is out of range 0..127"),
    ("/wae/note", [20], "outside the model's range 36..96"),
    ("/wae/note", [60, 0], "velocity 0 is out of range 1..127"),
    ("/wae/note", [60, 100, -1.0], "duration -1 is out of range"),
    ("/wae/note", [60, 100, math.inf], "duration must be finite"),
    ("/wae/noteon", [60], "expected 2 arguments, got 1"),
    ("/wae/noteon", [60, True], "velocity must be an int"),
    ("/wae/noteoff", [2**40], "pitch 1099511627776 is out of range"),
    ("/wae/panic", [1], "expected 0 arguments, got 1"),
    ("/wae/style", ["tuba", 1.0], "unknown style 'tuba'"),
    ("/wae/style", ["flute", math.nan], "style value must be finite"),
    ("/wae/style", ["flute", 2.5], "style value 2.5 is out of range 0..2"),
    ("/wae/style", ["flute", -0.1], "out of range"),
    ("/wae/style", [1.0, "flute"], "style name must be a string"),
    ("/wae/styles", [1.0, 0.5], "expected 3 fader values"),
    ("/wae/styles", [1.0, 0.5, math.inf], "must be finite"),
    ("/wae/mix", ["flute", 1.0, "piano"], "expected 2 arguments|name, weight pairs"),
    ("/wae/mix", ["flute", 1.0, "tuba", 1.0], "unknown style 'tuba'"),
    ("/wae/z", [0.0, 0.0], "expected 3 latent values, got 2"),
    ("/wae/z", [0.0, 0.0, 1e30], "out of range"),
    ("/wae/z/random", [-1], "seed -1 is out of range"),
    ("/wae/z/mode", ["sometimes"], "z mode must be one of fixed, per-note"),
    ("/wae/gain", [3.0], "gain 3 is out of range 0..2"),
    ("/wae/gain", [math.nan], "gain must be finite"),
    ("/wae/release", [-1.0], "release -1 is out of range"),
    ("/wae/bend_range", [100.0], "bend range 100 is out of range"),
    ("/wae/learn", ["style:tuba"], "unknown style 'tuba'"),
    ("/wae/learn", ["z:9"], "latent target 'z:9'"),
    ("/wae/learn", ["volume"], "unknown target 'volume'"),
    ("/wae/preset/save", ["../escape"], "bad preset name"),
    ("/wae/preset/load", ["never-saved"], "no preset named 'never-saved'"),
    ("/wae/preset/list", ["x"], "expected 0 arguments"),
    ("/wae/model/load", [3], "model path must be a string"),
    ("/wae/notify", [2], "notify 2 is out of range 0..1"),
    ("/wae/notify", [1, 70000], "port 70000 is out of range"),
    ("/wae/sync", ["a"], "sync id must be an int"),
]


@pytest.mark.parametrize("address, args, message", REFUSED, ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(REFUSED)])
def test_refusals_fail_and_change_nothing(commands, inst, address, args, message):
    before = inst.state.snapshot()
    replies = commands.apply(address, args, ME)
    assert len(replies) == 1 and replies[0][0] == "/fail" and replies[0][1][0] == address
    assert any(m in replies[0][1][1] for m in message.split("|")), replies[0][1][1]
    assert inst.state.snapshot() == before and not inst.pool.queued() and inst.midi_settings.learn is None
    assert inst.presets.list() == []


def test_notify_done_and_state_events(commands, inst):
    assert commands.apply("/wae/gain", [0.5], ME) == []
    assert commands.apply("/wae/notify", [1, 50123], ME) == [("/done", ["/wae/notify"])]
    assert commands.apply("/wae/gain", [0.75], ME) == [("/done", ["/wae/gain"])]
    assert (("127.0.0.1", 50123), "/wae/state", ["gain", 0.75]) in commands.sent
    assert commands.apply("/wae/status", [], ME)[-1][0] == "/wae/status.reply"   # queries: no /done
    commands.apply("/wae/notify", [0], ME)
    assert commands.apply("/wae/gain", [1.0], ME) == []


def test_learn_binds_the_next_controller(commands, inst):
    commands.apply("/wae/learn", ["style:violin"])
    inst.pool.midi(bytes([0xB0, 21, 0]))          # as a hardware input hands them to the voices
    inst.pool.midi(bytes([0xB0, 21, 127]))
    period(inst)
    while inst.controls:
        inst.control(inst.controls.popleft())
    assert inst.midi_settings.cc_map[21] == "style:violin" and inst.state.styles[2] == 1.0


def test_presets_and_program_change(commands, inst):
    commands.apply("/wae/mix", ["flute", 0.7])
    commands.apply("/wae/z", [1.0, 2.0, 3.0])
    assert commands.apply("/wae/preset/save", ["3"]) == []
    commands.apply("/wae/mix", ["piano", 1.0])
    assert commands.apply("/wae/preset/list", []) == [("/wae/preset/list.reply", ["3"])]
    commands.apply("/wae/preset/load", ["3"])
    assert inst.state.styles.tolist() == pytest.approx([0.0, 0.7, 0.0]) and inst.state.z.tolist() == [1.0, 2.0, 3.0]
    commands.apply("/wae/mix", ["piano", 1.0])
    inst.control(("program", 3))                  # program 3 recalls the preset named 3
    assert inst.state.styles.tolist() == pytest.approx([0.0, 0.7, 0.0])


def test_render_replies_at_once_without_a_thread(commands, inst, tmp_path):
    """Offline (no render thread) /wae/render writes the file before it replies, as an ordinary reply."""
    from waeserver.live.note_files import NoteFiles

    inst.note_files = NoteFiles(tmp_path / "renders", 1.0, threaded=False)
    ((address, (name, path, frames, rate)),) = commands.apply("/wae/render", ["n1", 60, 80])
    assert (address, name, path, rate) == ("/wae/render.reply", "n1", str(tmp_path / "renders" / "n1.wav"), 48000)
    assert frames > 0.5 * 48000 and (tmp_path / "renders" / "n1.wav").stat().st_size > 4 * frames
    assert commands.apply("/wae/render", ["../n2", 60])[0][0] == "/fail"
    assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == ["n1.wav"]


def test_info_status_and_sync(commands, inst):
    assert commands.apply("/wae/model/info", []) == [("/wae/model/info.reply",
                                                       ["osc-test", 3, 22050, "piano", "flute", "violin"])]
    (address, status), = commands.apply("/wae/status", [])
    assert address == "/wae/status.reply" and len(status) == 13    # the contract's ten, then three more
    assert [type(v) for v in status] == [int, int, float, float, float, float, int, int, str, str, int, float, int]
    assert status[8] == "cpu" and status[9] == "osc-test" and status[12] == 0
    commands.report_late(0.25, "/wae/note")
    assert commands.apply("/wae/status", [])[0][1][12] == 1
    assert commands.apply("/wae/version", []) == [("/wae/version.reply", ["waeserver", __version__])]
    assert commands.apply("/wae/version", [1])[0][0] == "/fail"
    commands.apply("/wae/sync", [42], ME)
    period(inst)
    assert ("synced", (ME, 42)) in inst.pool.events


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_model_load_refuses_a_corrupt_bundle_and_swaps_a_good_one(commands, inst, models):
    commands.apply("/wae/notify", [1], ME)
    commands.apply("/wae/model/load", [str(models["corrupt"])], ME)
    wait_for(lambda: commands.sent)
    dest, address, args = commands.sent[-1]
    assert (dest, address, args[0]) == (ME, "/fail", "/wae/model/load") and "weights" in args[1]
    assert inst.bundle.name == "osc-test"
    old_cache = inst.cache
    period(inst)
    commands.apply("/wae/model/load", [str(models["second"])], ME)
    wait_for(lambda: inst.renderer._swap is not None)
    assert inst.bundle.name == "osc-test"          # ready, swapped between two renders
    inst.renderer.step()
    assert inst.bundle.name == "other" and inst.pool.cache is inst.cache is not old_cache
    assert inst.cache.n_fresh() == inst.cache.high - inst.cache.low + 1
    assert (ME, "/done", ["/wae/model/load"]) in commands.sent
    assert inst.state.style_names == ["oboe", "piano"] and inst.state.styles.tolist() == [0.0, 1.0]
    assert commands.apply("/wae/model/info", [])[0][1][:2] == ["other", 2]


# --- over UDP -----------------------------------------------------------------------------------
@pytest.fixture
def server(inst):
    osc = OscServer(Commands(inst), "127.0.0.1", 0)
    osc.start()
    yield osc
    osc.stop()


@pytest.fixture
def client():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    yield sock
    sock.close()


def receive(sock) -> tuple[str, list]:
    msg = OscMessage(sock.recv(65536))
    return msg.address, msg.params


def test_udp_replies_and_refusals(server, client, inst):
    client.sendto(encode("/wae/model/info", []), server.address)
    assert receive(client) == ("/wae/model/info.reply", ["osc-test", 3, 22050, "piano", "flute", "violin"])
    client.sendto(encode("/wae/bogus", [1]), server.address)
    assert receive(client) == ("/fail", ["/wae/bogus", "unknown address /wae/bogus"])
    client.sendto(b"not an osc packet", server.address)
    address, args = receive(client)
    assert address == "/fail" and "malformed" in args[1]
    bundle = OscBundleBuilder(IMMEDIATELY)
    for value in (0.2, 0.3):
        msg = OscMessageBuilder("/wae/gain")
        msg.add_arg(value)
        bundle.add_content(msg.build())
    client.sendto(bundle.build().dgram, server.address)
    client.sendto(encode("/wae/preset/list", []), server.address)
    assert receive(client) == ("/wae/preset/list.reply", [])
    assert inst.state.gain == pytest.approx(0.3)


def test_udp_notify_to_another_port(server, client, inst):
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5.0)
    try:
        client.sendto(encode("/wae/notify", [1, listener.getsockname()[1]]), server.address)
        assert receive(listener) == ("/done", ["/wae/notify"])
        client.sendto(encode("/wae/style", ["violin", 0.5]), server.address)
        assert receive(listener) == ("/wae/state", ["styles", 1.0, 0.0, 0.5])
        assert receive(listener) == ("/done", ["/wae/style"])
    finally:
        listener.close()


def test_allow_list_drops_strangers(inst, client):
    osc = OscServer(Commands(inst), "127.0.0.1", 0, allow=["10.1.2.3"])
    osc.start()
    try:
        client.settimeout(0.5)
        client.sendto(encode("/wae/gain", [0.1]), osc.address)
        with pytest.raises(socket.timeout):
            client.recv(100)
        assert inst.state.gain == 1.0 and osc.dropped == 1
    finally:
        osc.stop()


def test_flood_of_ten_thousand_messages(server, client, inst):
    for i in range(10_000):
        client.sendto(encode("/wae/style", ["flute", (i % 200) / 100.0]), server.address)
    time.sleep(0.2)
    client.sendto(encode("/wae/style", ["flute", 0.125]), server.address)
    client.sendto(encode("/wae/model/info", []), server.address)
    assert receive(client)[0] == "/wae/model/info.reply"
    assert server.received > 1_000 and server.refused == 0
    assert inst.state.styles[1] == 0.125          # the latest message wins
    assert not inst.cache.fresh[inst.cache.low:inst.cache.high + 1].all()


def test_a_bundle_tagged_ahead_is_held_until_its_time(server, client, inst):
    client.sendto(encode_bundle(time.time() + 0.5, [("/wae/gain", [0.4]), ("/wae/gain", [0.6])]), server.address)
    client.sendto(encode("/wae/model/info", []), server.address)   # plain messages still apply at once
    assert receive(client)[0] == "/wae/model/info.reply"
    assert inst.state.gain == 1.0 and server.scheduler.pending == 2
    wait_for(lambda: inst.state.gain == pytest.approx(0.6), timeout=5)   # both, in order
    assert server.scheduler.pending == 0 and server.commands.late == 0


def test_late_far_nested_malformed_and_flooding_bundles(server, client, inst):
    """A late bundle applies at once and is reported; one more than 60 s ahead, nested, malformed or
    over the held messages' bound is refused whole with /fail, and nothing changes."""
    client.sendto(encode("/wae/notify", [1]), server.address)
    assert receive(client) == ("/done", ["/wae/notify"])
    client.sendto(encode_bundle(time.time() - 2.0, [("/wae/gain", [0.5])]), server.address)
    address, (seconds, first) = receive(client)
    assert address == "/wae/late" and 2.0 <= seconds < 3.0 and first == "/wae/gain"
    assert receive(client)[0] == "/wae/state" and inst.state.gain == 0.5
    assert receive(client) == ("/done", ["/wae/gain"])
    client.sendto(encode("/wae/status", []), server.address)
    assert receive(client)[1][12] == 1
    client.sendto(encode_bundle(time.time() + 61.0, [("/wae/gain", [0.7])]), server.address)
    address, (what, why) = receive(client)
    assert (address, what) == ("/fail", "#bundle") and "at most 60 s" in why
    inner = OscBundleBuilder(IMMEDIATELY)
    msg = OscMessageBuilder("/wae/gain")
    msg.add_arg(0.8)
    inner.add_content(msg.build())
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(inner.build())
    client.sendto(outer.build().dgram, server.address)
    address, (what, why) = receive(client)
    assert (address, what) == ("/fail", "#bundle") and "nested" in why
    good = encode_bundle(None, [("/wae/gain", [0.9]), ("/wae/gain", [0.8])])
    client.sendto(good[:16] + (1000).to_bytes(4, "big") + good[20:], server.address)    # an element too long
    address, (what, why) = receive(client)
    assert (address, what) == ("/fail", "#bundle") and "size" in why
    client.sendto(good[:-3], server.address)                                             # truncated
    assert receive(client)[:1] == ("/fail",)
    assert inst.state.gain == 0.5
    flood = [("/wae/noteoff", [60])] * 1500
    for _ in range(2):
        client.sendto(encode_bundle(time.time() + 30.0, flood), server.address)
    client.sendto(encode_bundle(time.time() + 30.0, flood), server.address)
    address, (what, why) = receive(client)
    assert (address, what) == ("/fail", "#bundle") and "at most 4096" in why
    assert server.scheduler.pending == 3000
