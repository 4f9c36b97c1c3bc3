"""The shipped patches and example scripts, run with the real programs.

SuperCollider (sclang, headless) and Pure Data (pd -nogui) run the shipped files against an OSC
peer of the test's own, which checks every address and type tag against the contract and answers
the queries, and then against the real daemon on a dummy JACK server, whose status and audio
show that the notes and fader moves arrived. The Max patch is checked as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from waeserver.live.osc import ADDRESSES

ROOT = Path(__file__).resolve().parents[2]
SC = ROOT / "patches" / "supercollider"
QUARK = SC / "Wae"
PD = ROOT / "patches" / "pd"
MAXPKG = ROOT / "patches" / "max" / "waeserver"
MAXPAT = MAXPKG / "extras" / "waeserver.maxpat"
EXAMPLES = ROOT / "examples"
STYLES = ["piano", "flute", "violin"]

# The OSC address space: address -> its type tags (i int, f float, s string) as a regex.
CONTRACT = {address: spec.tags for address, spec in ADDRESSES.items()}


def follows_contract(address: str, tags: str) -> bool:
    return address in CONTRACT and re.fullmatch(CONTRACT[address], tags) is not None


def encode(address: str, args: list) -> bytes:
    builder = OscMessageBuilder(address)
    for a in args:
        builder.add_arg(a)
    return builder.build().dgram


def type_tags(dgram: bytes) -> str:
    """The type tags of one OSC message, without the comma."""
    start = (dgram.index(b"\0") // 4 + 1) * 4
    return dgram[start + 1:dgram.index(b"\0", start)].decode()


NTP_UNIX = 2208988800   # seconds from 1900 (NTP) to 1970


def unbundle(data: bytes, tag: float | None = None) -> list[tuple[bytes, float | None]]:
    """The messages of an OSC packet, each with its bundle's time tag in Unix seconds (None: a
    plain message; 0: "now")."""
    if not data.startswith(b"#bundle\0"):
        return [(data, tag)]
    seconds, fraction = struct.unpack(">II", data[8:16])
    tag = 0.0 if (seconds, fraction) == (0, 1) else seconds - NTP_UNIX + fraction / 2**32
    out, i = [], 16
    while i < len(data):
        (size,) = struct.unpack(">i", data[i:i + 4])
        out += unbundle(data[i + 4:i + 4 + size], tag)
        i += 4 + size
    return out


class OscPeer:
    """A UDP OSC endpoint on an ephemeral port that records what arrives and answers queries.

    ``answers`` maps an address to a function of the message's arguments giving the replies
    [(address, args), ...], sent back to the sender's address and port like the daemon does.
    """

    def __init__(self, answers: dict | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.answers = answers or {}
        self.received: list[tuple[str, str, list, tuple]] = []
        self.tagged: list[tuple[float, float, str, list]] = []   # (arrival, tag, address, args), Unix seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            for dgram, tag in unbundle(data):
                msg = OscMessage(dgram)
                self.received.append((msg.address, type_tags(dgram), list(msg.params), sender))
                if tag is not None:
                    self.tagged.append((time.time(), tag, msg.address, list(msg.params)))
                for address, args in self.answers.get(msg.address, lambda a: [])(msg.params):
                    self.sock.sendto(encode(address, args), sender)

    def send(self, dest: tuple[str, int], address: str, args: list) -> None:
        self.sock.sendto(encode(address, args), dest)

    def settle(self, quiet: float = 0.15) -> None:
        """Wait until nothing has arrived for `quiet` seconds (datagrams still in flight)."""
        count = -1
        while count != len(self.received):
            count = len(self.received)
            time.sleep(quiet)

    def messages_now(self, address: str) -> list[tuple[str, list]]:
        return [(tags, args) for a, tags, args, _ in self.received if a == address]

    def messages(self, address: str) -> list[tuple[str, list]]:
        """Like `messages_now`, once nothing more is in flight."""
        self.settle()
        return self.messages_now(address)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def daemon_like_answers(styles=STYLES) -> dict:
    return {
        "/wae/model/info": lambda a: [("/wae/model/info.reply", ["test-bundle", 3, 22050, *styles])],
        "/wae/preset/list": lambda a: [("/wae/preset/list.reply", ["intro", "verse"])],
        "/wae/status": lambda a: [("/wae/status.reply", [0, 0, 0.1, 1.0, 2.0, 3.0, 0, 0, "cpu", "test-bundle"])],
        "/wae/sample/record": lambda a: [("/wae/sample.reply", [0.5, -1.0, 0.25])],
        "/wae/encode": lambda a: [("/wae/encode.reply", [0.125, 0.0, -2.0])],
    }


@pytest.fixture
def peer():
    p = OscPeer(daemon_like_answers())
    yield p
    p.close()


def assert_all_follow_contract(peer: OscPeer) -> None:
    peer.settle()
    wrong = [(a, t) for a, t, _, _ in peer.received if not follows_contract(a, t)]
    assert peer.received and not wrong, f"messages outside the contract: {wrong}"


# --- running the programs ------------------------------------------------------------------------

def require(program: str, package: str) -> None:
    if shutil.which(program) is None:
        pytest.fail(f"{program} is not installed (make test installs {package})")


def run_sclang(script: str, tmp_path: Path, timeout: int = 40, env: dict | None = None, quark: bool = True) -> str:
    """Run `script` with sclang headless; returns what it posted. The script must end with 0.exit.
    With `quark`, the class library includes the Wae quark's folder (a library config of the
    test's own, as an installed quark would be); `env` adds to the environment."""
    require("sclang", "supercollider-language")
    path = tmp_path / "test.scd"
    path.write_text(script)
    args = []
    if quark:
        conf = tmp_path / "sclang_conf.yaml"
        conf.write_text(f"includePaths:\n  - {sc_path(QUARK)}\nexcludePaths: []\npostInlineWarnings: false\n")
        args = ["-l", str(conf)]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QTWEBENGINE_DISABLE_SANDBOX="1", **(env or {}))
    proc = subprocess.run(["timeout", str(timeout), "sclang", *args, str(path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, f"sclang exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    assert "ERROR" not in proc.stdout, proc.stdout[-3000:]
    return proc.stdout


def sc_path(path: Path) -> str:
    return json.dumps(str(path))  # a double-quoted string, valid in sclang too


SHOWN = ("model", "styles", "status", "presets", "note-on", "note-off", "refused", "point")


def run_pd(port: int, actions: str, tmp_path: Path, run_ms: int = 1500) -> str:
    """Open the shipped patch inside a wrapper that points it at `port` and, once the style names
    have arrived, sends `actions` (Pd messages `receiver value`, separated by ';'), then quits
    `run_ms` later. Returns Pd's console, where the wrapper also prints what reaches the patch's
    displays (`show-status: ...`)."""
    require("pd", "puredata-core")
    body = " \\; ".join(a.strip() for a in actions.split(";") if a.strip())
    objects = [
        "#X obj 10 10 waeserver",
        "#X obj 10 40 loadbang",
        f"#X msg 10 70 \\; wae-connect 127.0.0.1 {port}",
        "#X obj 10 100 r wae-names",
        "#X obj 10 130 spigot 1",     # the first names only
        "#X obj 10 160 t b b",
        "#X msg 60 190 0",
        "#X obj 10 220 delay 50",      # every fader has its name by then
        f"#X msg 10 250 \\; {body}",
        f"#X obj 10 280 delay {run_ms}",
        "#X msg 10 310 \\; pd quit",
    ]
    connections = [(1, 0, 2, 0), (3, 0, 4, 0), (4, 0, 5, 0), (5, 1, 6, 0), (6, 0, 4, 1), (5, 0, 7, 0),
                   (7, 0, 8, 0), (7, 0, 9, 0), (9, 0, 10, 0)]
    for i, name in enumerate(SHOWN):
        objects += [f"#X obj 300 {10 + 60 * i} r wae-show-{name}", f"#X obj 300 {40 + 60 * i} print show-{name}"]
        connections.append((len(objects) - 2, 0, len(objects) - 1, 0))
    lines = ["#N canvas 0 0 500 500 12", *objects, *("#X connect {} {} {} {}".format(*c) for c in connections)]
    path = tmp_path / "wrapper.pd"
    path.write_text("".join(line + ";\n" for line in lines))
    timeout = run_ms // 1000 + 15
    proc = subprocess.run(["timeout", str(timeout), "pd", "-nogui", "-nosound", "-nomidi", "-stderr",
                           "-path", str(PD), "-open", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, f"pd exited {proc.returncode} (124: no style names came):\n{proc.stderr[-3000:]}"
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() or "couldn't create" in line]
    assert not errors, errors
    return proc.stderr


# --- SuperCollider against the test's own peer ---------------------------------------------------

def test_supercollider_client_and_patterns_send_the_contract(peer, tmp_path):
    out = run_sclang(f"""
~waeAddr = NetAddr("127.0.0.1", {peer.port});
{sc_path(SC / "pbind_example.scd")}.load;   // loads waeserver.scd itself, which makes ~wae
fork {{
    while {{ ~wae.styleNames.isEmpty }} {{ 0.05.wait }};   // the info reply
    ("STYLES " ++ ~wae.styleNames.join(",")).postln;
    ~wae.note(60, 100, 0.5); ~wae.note(61); ~wae.noteOn(62, 90); ~wae.noteOff(62);
    ~wae.style(\\flute, 1); ~wae.mix(\\piano, 0.3, \\violin, 1); ~wae.styles([1, 0, 0.5]);
    ~wae.z([0.5, -1, 0]); ~wae.zRandom(7); ~wae.zRandom; ~wae.zMode('per-note');
    ~wae.gain(1); ~wae.releaseTime(0.2); ~wae.bendRange(2); ~wae.learn("style:flute");
    ~wae.presetSave(\\intro); ~wae.presetLoad(\\intro); ~wae.presetList; ~wae.loadModel("/nowhere");
    ~wae.status {{ |st| ("STATUS " ++ st.model ++ " " ++ st.cpuLoad).postln }};
    ~wae.notify(1); ~wae.sync; ~wae.version; ~wae.render(\\n1, 60); ~wae.render(\\n2, 60, 90); ~wae.panic;
    ~wae.sample(1.5) {{ |point| ("SAMPLED " ++ point.join(",")).postln }};
    ~wae.encode("/tmp/note.wav") {{ |point| ("ENCODED " ++ point.join(",")).postln }};
    Pdef(\\waeMelody).play(quant: 0); Tdef(\\waeMorph).play(quant: 0); Pdef(\\waeSwell).play(quant: 0);
    1.2.wait;
    Pdef(\\waeMelody).stop; Tdef(\\waeMorph).stop; Pdef(\\waeSwell).stop;
    ("PRESETS " ++ ~wae.presets.join(",")).postln;
    0.exit;
}};
""", tmp_path)
    assert "STYLES piano,flute,violin" in out  # the class parsed /wae/model/info.reply
    assert "PRESETS intro,verse" in out
    assert "STATUS test-bundle 0.1" in out     # named fields
    assert "SAMPLED 0.5,-1.0,0.25" in out and "ENCODED 0.125,0.0,-2.0" in out   # the points, as Floats
    assert_all_follow_contract(peer)
    sent = {a for a, *_ in peer.received}
    assert set(CONTRACT) <= sent, f"helpers never sent {set(CONTRACT) - sent}"
    assert ("iif", [60, 100, 0.5]) in peer.messages("/wae/note")
    assert peer.messages("/wae/sample/record") == [("f", [1.5])]
    assert peer.messages("/wae/encode") == [("s", ["/tmp/note.wav"])]
    # The Pbind: dorian from middle C, dur 0.25 * legato 0.5 at tempo 1 -> 0.125 s, velocity 110,
    # each note in a bundle tagged s.latency (0.2 s) ahead, the tags as far apart as the durations
    pattern = [(tag, arrival, args) for arrival, tag, address, args in peer.tagged if address == "/wae/note"]
    assert [n[2][0] for n in pattern[:4]] == [60, 63, 67, 70]
    assert pattern[0][2][1:] == [110, 0.125]
    assert all(0.15 < tag - arrival < 0.25 for tag, arrival, _ in pattern), pattern
    assert [round(b[0] - a[0], 4) for a, b in zip(pattern, pattern[1:4])] == [0.25, 0.25, 0.5]
    # The Routine morph fades the first style into the second; the Pbind swell moves both faders,
    # in timed bundles too.
    mixes = [args for _, args in peer.messages("/wae/mix") if args[0] == "piano" and args[2] == "flute"]
    assert len(mixes) >= 5 and mixes[0][1] == 1.0 and mixes[-1][3] > 0
    assert all(abs(m[1] + m[3] - 1) < 1e-6 for m in mixes)
    swell = [args for _, args in peer.messages("/wae/style") if args[0] == "flute"]
    assert len(swell) >= 5 and swell[-1][1] > swell[1][1]
    assert sum(1 for *_, address, args in peer.tagged if address == "/wae/style" and args[0] == "flute") >= 5


def test_supercollider_midi_forwarding_and_gui(peer, tmp_path):
    out = run_sclang(f"""
~waeAddr = NetAddr("127.0.0.1", {peer.port});
{sc_path(SC / "midi_forward.scd")}.load;
{sc_path(SC / "gui.scd")}.load;
fork {{
    while {{ ~wae.styleNames.isEmpty or: {{ ~wae.presets.isEmpty }} or: {{ ~waeGui.faders.isNil }} }} {{ 0.05.wait }};
    MIDIIn.doNoteOnAction(1, 0, 64, 80); MIDIIn.doNoteOffAction(1, 0, 64, 0);
    MIDIIn.doControlAction(1, 0, 1, 127); MIDIIn.doControlAction(1, 0, 123, 0);
    MIDIIn.doProgramAction(1, 0, 1);
    {{
        ("FADERS " ++ ~waeGui.faders.collect(_.first).join(",")).postln;
        ~waeGui.faders[2][1].valueAction_(0.75);
        ~waeGui.zSliders[0].valueAction_(1);
        ~waeGui.keyboard.mouseDownAction.value(~waeGui.keyboard, 5, 50);
        ~waeGui.keyboard.mouseUpAction.value(~waeGui.keyboard, 5, 50);
    }}.defer;
    0.5.wait;
    0.exit;
}};
""", tmp_path)
    assert "FADERS piano,flute,violin" in out  # one slider per style, named from the reply
    assert_all_follow_contract(peer)
    assert ("ii", [64, 80]) in peer.messages("/wae/noteon")
    assert ("i", [64]) in peer.messages("/wae/noteoff")
    assert ("sf", ["flute", 1.0]) in peer.messages("/wae/style")       # CC1 -> second style
    assert peer.messages("/wae/panic")                                   # CC123
    assert ("s", ["verse"]) in peer.messages("/wae/preset/load")         # program 1 -> second preset
    assert ("sf", ["violin", 1.5]) in peer.messages("/wae/style")      # third slider at 3/4 of 0..2
    assert ("fff", [3.0, 0.0, 0.0]) in peer.messages("/wae/z")
    assert ("ii", [48, 100]) in peer.messages("/wae/noteon")            # lowest white key


# --- Pure Data against the test's own peer -------------------------------------------------------

def test_pd_patch_sends_the_contract_and_names_faders_from_the_reply(tmp_path):
    peer = OscPeer({**daemon_like_answers(),
                    "/wae/note": lambda a: [("/wae/n_go", [a[0]]), ("/fail", ["/wae/note", "a test refusal"])]})
    try:
        err = run_pd(peer.port, """
            wae-key 12; wae-note 62 90 0.25; wae-fader-1 1.5; wae-fader-2 0.25; wae-fader-4 1;
            wae-z-1 0.5; wae-zrandom bang; wae-zmode 1; wae-gain 0.8; wae-panic bang;
            wae-mix piano 0.5 violin 0.5;
            wae-preset-save intro; wae-preset-load intro; wae-poll 1; wae-sample 1.5; wae-encode /tmp/note.wav""",
                     tmp_path)
    finally:
        peer.close()
    assert_all_follow_contract(peer)
    assert peer.messages("/wae/notify") == [("i", [1])]
    assert peer.messages("/wae/model/info")
    assert ("iif", [60, 100, 0.5]) in peer.messages("/wae/note")   # keyboard cell 12 above 48
    assert ("iif", [62, 90, 0.25]) in peer.messages("/wae/note")
    # faders 1 and 2 carry the second and third names of the reply; fader 4 has none and is silent
    assert peer.messages("/wae/style") == [("sf", ["flute", 1.5]), ("sf", ["violin", 0.25])]
    assert peer.messages("/wae/z") == [("fff", [0.0, 0.5, 0.0])]
    assert peer.messages("/wae/mix") == [("sfsf", ["piano", 0.5, "violin", 0.5])]
    assert peer.messages("/wae/preset/save") == [("s", ["intro"])]
    assert peer.messages("/wae/preset/load") == [("s", ["intro"])]
    assert len(peer.messages("/wae/status")) >= 1
    assert peer.messages("/wae/z/mode") == [("s", ["per-note"])]
    assert peer.messages("/wae/sample/record") == [("f", [1.5])]
    assert peer.messages("/wae/encode") == [("s", ["/tmp/note.wav"])]
    # the replies reach the patch's displays (Pd prints a list that starts with a name as "list ...")
    assert "show-model: list test-bundle 3 22050" in err
    assert "show-styles: list piano flute violin" in err
    assert "show-presets: list intro verse" in err
    assert "show-status: 0 0 0.1 1 2 3 0 0 cpu test-bundle" in err
    assert "show-note-on: 60" in err
    assert "show-refused: list /wae/note a\\ test\\ refusal" in err
    assert "wae-fail: /wae/note a\\ test\\ refusal" in err
    assert "show-point: 0.5 -1 0.25" in err and "show-point: 0.125 0 -2" in err   # both replies' points


# --- Max, as JSON ----------------------------------------------------------------------------------

class MaxPatch:
    """A Max patcher file (.maxpat, .maxhelp: JSON) checked for consistency: unique box ids, every
    patch cord from an existing outlet to an existing inlet."""

    def __init__(self, path: Path):
        patcher = json.loads(path.read_text())["patcher"]
        self.boxes = {b["box"]["id"]: b["box"] for b in patcher["boxes"]}
        self.lines = [(ln["patchline"]["source"], ln["patchline"]["destination"]) for ln in patcher["lines"]]
        assert len(self.boxes) == len(patcher["boxes"]), path
        for (src, outlet), (dst, inlet) in self.lines:
            assert outlet < self.boxes[src]["numoutlets"] and inlet < self.boxes[dst]["numinlets"], (path, src, dst)
        self.downstream: dict[str, set[str]] = {}
        for (src, _), (dst, _) in self.lines:
            self.downstream.setdefault(src, set()).add(dst)

    def find(self, maxclass, text=None) -> list[str]:
        return [i for i, b in self.boxes.items()
                if b["maxclass"] == maxclass and (text is None or b.get("text") == text)]

    def one(self, maxclass, text=None) -> str:
        (found,) = self.find(maxclass, text)
        return found

    def reaches(self, start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += self.downstream.get(node, ())
        return False

    def texts(self, maxclass) -> list[str]:
        return [b.get("text", "") for b in self.boxes.values() if b["maxclass"] == maxclass]


def test_max_patch_is_valid_and_wired_to_the_daemon():
    patch = MaxPatch(MAXPAT)
    boxes, find, reaches = patch.boxes, patch.find, patch.reaches
    (udpsend,) = find("newobj", "udpsend 127.0.0.1 57130")
    (udpreceive,) = [i for i, b in boxes.items() if b.get("text", "").startswith("udpreceive ")]
    reply_port = boxes[udpreceive]["text"].split()[1]
    notify = find("message", f"/wae/notify 1 {reply_port}")
    assert notify, "the patch must subscribe its udpreceive port"

    # every OSC address in the patch is in the contract and every sender reaches udpsend
    osc_boxes = {i: b["text"] for i, b in boxes.items()
                 if (b["maxclass"] == "message" and b["text"].startswith("/wae/"))
                 or (b["maxclass"] == "newobj" and b["text"].startswith("prepend /wae/"))}
    addresses = {t.split()[1] if t.startswith("prepend") else t.split()[0] for t in osc_boxes.values()}
    assert addresses <= set(CONTRACT), addresses - set(CONTRACT)
    assert {"/wae/note", "/wae/style", "/wae/z", "/wae/z/random", "/wae/preset/save", "/wae/preset/load",
            "/wae/model/info", "/wae/status", "/wae/notify", "/wae/gain", "/wae/panic"} <= addresses
    for box_id in osc_boxes:
        assert reaches(box_id, udpsend), osc_boxes[box_id]

    (kslider,) = find("kslider")
    (note,) = find("newobj", "prepend /wae/note")
    assert reaches(kslider, note)
    style_sliders = [i for i in find("slider") if reaches(i, find("newobj", "prepend /wae/style")[0])]
    assert len(style_sliders) == 8 and all(boxes[i]["size"] == 2.0 for i in style_sliders)
    (route,) = [i for i, b in boxes.items() if b.get("text", "").startswith("route /wae/model/info.reply")]
    assert reaches(udpreceive, route)
    # the style names from the reply reach the faders' prepend boxes
    assert all(reaches(route, p) for p in find("newobj", "prepend"))
    help_text = " ".join(b["text"] for b in boxes.values() if b["maxclass"] == "comment")
    assert "waeserver serve" in help_text


def osc_addresses(patch: MaxPatch) -> set[str]:
    """The /wae/ addresses a patch's message boxes and prepend objects send."""
    texts = [t for t in patch.texts("message") if t.startswith("/wae/")]
    texts += [t.split(maxsplit=1)[1] for t in patch.texts("newobj") if t.startswith("prepend /wae/")]
    return {t.split()[0] for t in texts}


def test_max_package_is_laid_out_and_its_abstractions_wired():
    info = json.loads((MAXPKG / "package-info.json").read_text())
    assert info["name"] == "waeserver" and info["version"] and info["max_version_min"] >= "8"
    assert set(info["os"]) == {"macintosh", "windows"}
    assert (MAXPKG / "help" / info["homepatcher"]).is_file()
    names = ("wae.client", "wae.note", "wae.style", "wae.render", "wae.sample")
    assert {p.stem for p in (MAXPKG / "patchers").glob("*.maxpat")} == set(names)
    patches = {n: MaxPatch(MAXPKG / "patchers" / f"{n}.maxpat") for n in names}
    helps = {n: MaxPatch(MAXPKG / "help" / f"{n}.maxhelp") for n in names}
    for patch in [*patches.values(), *helps.values(), MaxPatch(MAXPAT)]:
        assert osc_addresses(patch) <= set(CONTRACT), osc_addresses(patch) - set(CONTRACT)

    # wae.client: the one connection; its inlet and [r wae.send] reach udpsend, replies go out and
    # to [s wae.reply]; it subscribes its reply port (from its arguments) on load
    c = patches["wae.client"]
    udpsend, udpreceive = c.one("newobj", "udpsend 127.0.0.1 57130"), c.one("newobj", "udpreceive 57132")
    assert c.reaches(c.one("inlet"), udpsend) and c.reaches(c.one("newobj", "r wae.send"), udpsend)
    assert c.reaches(c.one("newobj", "loadbang"), c.one("message", "/wae/notify 1 $1"))
    assert c.reaches(c.one("message", "/wae/notify 1 $1"), udpsend)
    args = c.one("newobj", "patcherargs 127.0.0.1 57130 57132")
    assert c.reaches(args, udpsend) and c.reaches(args, udpreceive)
    assert c.reaches(args, c.one("message", "/wae/notify 1 $1"))
    assert all(c.reaches(udpreceive, o) for o in c.find("outlet")) and len(c.find("outlet")) == 2
    assert c.reaches(udpreceive, c.one("newobj", "s wae.reply"))
    assert c.reaches(c.one("newobj", "route /fail"), c.one("newobj", "print wae.fail"))

    # wae.note: three inlets packed into /wae/note; the n_go pitches out
    n = patches["wae.note"]
    send = n.one("newobj", "s wae.send")
    assert len(n.find("inlet")) == 3
    assert all(n.reaches(i, n.one("newobj", "prepend /wae/note")) for i in n.find("inlet"))
    assert n.reaches(n.one("newobj", "prepend /wae/note"), send)
    assert n.reaches(n.one("newobj", "r wae.reply"), n.one("outlet")) and n.find("newobj", "route /wae/n_go")

    # wae.style NAME: its argument names the fader
    st = patches["wae.style"]
    assert st.reaches(st.one("inlet"), st.one("message", "/wae/style #1 $1"))
    assert st.reaches(st.one("message", "/wae/style #1 $1"), st.one("newobj", "s wae.send"))

    # wae.render BUFFER: /wae/render BUFFER pitch velocity; its own reply's path into buffer~ BUFFER,
    # as it is or under a local folder
    r = patches["wae.render"]
    render, buffer = r.one("message", "/wae/render #1 $1 $2"), r.one("newobj", "buffer~ #1")
    assert all(r.reaches(i, render) for i in r.find("inlet")) and r.reaches(render, r.one("newobj", "s wae.send"))
    route = r.one("newobj", "route /wae/render.reply")
    assert r.reaches(r.one("newobj", "r wae.reply"), route) and r.reaches(route, r.one("newobj", "route #1"))
    replace = r.one("newobj", "prepend replace")
    assert r.reaches(route, replace) and r.reaches(replace, buffer)
    assert r.reaches(r.one("newobj", "strippath"), r.one("newobj", "sprintf symout %s/%s"))
    assert r.reaches(r.one("newobj", "route folder"), r.one("newobj", "zl reg"))
    assert any(r.reaches(buffer, o) for o in r.find("outlet"))       # bang when loaded

    # wae.sample: seconds (as a float: the contract's f) to /wae/sample/record, 'encode PATH' to
    # /wae/encode; either reply's point out of the left outlet, their refusals' reasons out of the right
    sm = patches["wae.sample"]
    record, encode_file = sm.one("newobj", "prepend /wae/sample/record"), sm.one("newobj", "prepend /wae/encode")
    assert sm.reaches(sm.one("inlet"), encode_file) and sm.reaches(sm.one("newobj", "t f"), record)
    assert sm.reaches(sm.one("inlet"), sm.one("newobj", "t f"))
    assert all(sm.reaches(p, sm.one("newobj", "s wae.send")) for p in (record, encode_file))
    point, reason = sorted(sm.find("outlet"), key=lambda o: sm.boxes[o]["patching_rect"][0])
    replies = sm.one("newobj", "route /wae/sample.reply /wae/encode.reply /fail")
    refused = sm.one("newobj", "route /wae/sample/record /wae/encode")
    assert sm.reaches(sm.one("newobj", "r wae.reply"), replies)
    assert ([replies, 0], [point, 0]) in sm.lines and ([replies, 1], [point, 0]) in sm.lines
    assert ([replies, 2], [refused, 0]) in sm.lines and sm.reaches(refused, reason) and not sm.reaches(refused, point)

    # every help file holds its abstraction with the inlets and outlets it has, and a wae.client
    for name, patch in patches.items():
        h = helps[name]
        uses = [b for b in h.boxes.values() if b["maxclass"] == "newobj" and b.get("text", "").split()[0] == name]
        assert uses, f"{name}.maxhelp does not use {name}"
        assert all((b["numinlets"], b["numoutlets"]) == (len(patch.find("inlet")), len(patch.find("outlet")))
                   for b in uses), name
        assert h.find("newobj", "wae.client") and h.texts("comment")
    assert helps["wae.render"].reaches(helps["wae.render"].one("newobj", "wae.render wae.note"),
                                       helps["wae.render"].one("newobj", "play~ wae.note"))


# --- example scripts -------------------------------------------------------------------------------

def load_example(name: str):
    """Import examples/NAME.py (the examples folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


morph = load_example("morph")
play_midi = load_example("play_midi")
latent_walk = load_example("latent_walk")


def test_morph_weights():
    assert morph.lfo_weights(["a", "b"], 0, 8) == {"a": 1.0, "b": 0.0}
    w = morph.lfo_weights(["a", "b", "c"], 4, 8)   # halfway round a ring of three: between b and c
    assert w["a"] == 0 and math.isclose(w["b"], 0.5) and math.isclose(w["c"], 0.5)
    keys = [(0, "a"), (8, "b"), (16, "a")]
    assert morph.timeline_weights(keys, -1) == {"a": 1.0, "b": 0.0}
    assert morph.timeline_weights(keys, 2) == {"a": 0.75, "b": 0.25}
    assert morph.timeline_weights(keys, 12) == {"a": 0.5, "b": 0.5}
    assert morph.timeline_weights(keys, 99) == {"a": 1.0, "b": 0.0}
    assert morph.mix_arguments({"a": 1, "b": 0.5}) == ["a", 1.0, "b", 0.5]


def test_play_midi_maps_notes_to_osc():
    assert play_midi.osc_messages(mido.Message("note_on", note=60, velocity=90)) == [("/wae/noteon", [60, 90])]
    assert play_midi.osc_messages(mido.Message("note_on", note=60, velocity=0)) == [("/wae/noteoff", [60])]
    assert play_midi.osc_messages(mido.Message("note_off", note=61)) == [("/wae/noteoff", [61])]
    assert play_midi.osc_messages(mido.Message("control_change", control=120)) == [("/wae/panic", [])]
    assert play_midi.osc_messages(mido.Message("control_change", control=64, value=127)) == []
    assert play_midi.osc_messages(mido.Message("pitchwheel", pitch=100)) == []


def test_latent_walk_stays_in_bounds_and_returns_to_the_centre():
    rng = random.Random(0)
    z = [2.9, -2.9, 0.0]
    far = []
    for _ in range(2000):
        z = latent_walk.ou_step(z, 0.05, pull=0.5, sigma=2.0, rng=rng)
        far.append(max(abs(x) for x in z))
    assert max(far) <= latent_walk.LIMIT
    calm = [2.0, -2.0]
    for _ in range(200):
        calm = latent_walk.ou_step(calm, 0.05, pull=1.0, sigma=0.0, rng=rng)
    assert all(abs(x) < 2.0 * math.exp(-9) for x in calm)   # no noise: decays like exp(-pull t)


def run_example(name: str, *args: str, timeout: int = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_morph_script_sends_mixes(peer):
    proc = run_example("morph.py", "timeline", "0:piano", "0.3:flute", "--port", str(peer.port),
                       "--rate", "50", "--note", "60", "--every", "0.2")
    assert proc.returncode == 0, proc.stderr
    assert_all_follow_contract(peer)
    mixes = [args for _, args in peer.messages("/wae/mix")]
    assert mixes[0] == pytest.approx(["piano", 1.0, "flute", 0.0], abs=0.05)
    assert mixes[-1] == ["piano", 0.0, "flute", 1.0]
    assert len(mixes) >= 5 and len(peer.messages("/wae/note")) >= 2
    bad = run_example("morph.py", "timeline", "0:piano", "x:flute")
    assert bad.returncode == 2 and "is not SECONDS:STYLE" in bad.stderr


def test_latent_walk_asks_the_latent_size_and_walks(peer):
    proc = run_example("latent_walk.py", "--port", str(peer.port), "--duration", "0.4", "--rate", "40",
                       "--every", "0.1", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert_all_follow_contract(peer)
    zs = [args for _, args in peer.messages("/wae/z")]
    assert len(zs) >= 8 and all(len(z) == 3 for z in zs) and zs[0] != zs[-1]
    assert [args[0] for _, args in peer.messages("/wae/note")][:4] == [48, 55, 60, 63]
    assert peer.messages("/wae/panic")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        proc = run_example("latent_walk.py", "--port", str(silent.getsockname()[1]), "--duration", "0.1")
    finally:
        silent.close()
    assert proc.returncode == 1 and "no /wae/model/info.reply" in proc.stderr


@pytest.fixture
def midi_file(tmp_path) -> Path:
    song = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    song.tracks.append(track)
    track += [mido.MetaMessage("set_tempo", tempo=500000),
              mido.Message("note_on", note=60, velocity=90, time=0),
              mido.Message("control_change", control=64, value=127, time=48),
              mido.Message("note_on", note=64, velocity=70, time=48),
              mido.Message("note_off", note=60, velocity=0, time=96),
              mido.Message("note_on", note=64, velocity=0, time=48)]
    path = tmp_path / "song.mid"
    song.save(path)
    return path


def test_play_midi_over_osc(peer, midi_file):
    start = time.monotonic()
    proc = run_example("play_midi.py", str(midi_file), "--port", str(peer.port))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start >= 0.24   # 240 ticks at 120 bpm, played in real time
    assert_all_follow_contract(peer)
    peer.settle()
    sent = [(a, args) for a, _, args, _ in peer.received]
    assert sent == [("/wae/noteon", [60, 90]), ("/wae/noteon", [64, 70]), ("/wae/noteoff", [60]),
                    ("/wae/noteoff", [64]), ("/wae/panic", [])]
    bad = run_example("play_midi.py", str(midi_file.parent / "missing.mid"))
    assert bad.returncode == 1 and "cannot read" in bad.stderr


def test_play_midi_over_jack(jack_server, midi_file):
    import jack

    client = jack.Client("midi-catcher", no_start_server=True)
    port = client.midi_inports.register("in")
    caught: list[bytes] = []
    client.set_process_callback(lambda frames: caught.extend(bytes(data) for _, data in port.incoming_midi_events()))
    client.activate()
    try:
        proc = run_example("play_midi.py", str(midi_file), "--jack", "--jack-dest", "midi-catcher:in")
        time.sleep(0.05)
    finally:
        client.deactivate()
        client.close()
    assert proc.returncode == 0, proc.stderr
    # every channel message travels over JACK, sustain included, then all-notes-off on 16 channels
    assert caught[:5] == [bytes([0x90, 60, 90]), bytes([0xB0, 64, 127]), bytes([0x90, 64, 70]),
                          bytes([0x80, 60, 0]), bytes([0x90, 64, 0])]
    assert caught[5:] == [bytes([0xB0 | c, 123, 0]) for c in range(16)]


def test_controller_map_is_a_valid_daemon_config():
    from waeserver.data.recipes import PRESETS
    from waeserver.live.config import read_config, validate

    cfg = validate(read_config(EXAMPLES / "controller_cc.yaml"))
    styles = [t.split(":", 1)[1] for t in cfg.cc_map.values() if t.startswith("style:")]
    assert sorted(styles) == sorted(PRESETS["orchestra12"]["styles"])   # the gm-orchestra model
    assert set(cfg.cc_map) == set(range(8)) | set(range(16, 24))         # nanoKONTROL2 faders, knobs


# --- against the real daemon on a dummy JACK server ------------------------------------------------

@pytest.fixture(scope="module")
def test_bundle(tmp_path_factory) -> Path:
    from bundles import make_test_bundle

    return make_test_bundle(tmp_path_factory.mktemp("models") / "test-bundle", styles=tuple(STYLES))


class LiveDaemon:
    """`waeserver serve` in a subprocess, a subscribed OSC monitor, and a JACK client recording out_1."""

    def __init__(self, jack_server: str, bundle: Path, tmp_path: Path):
        import jack

        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.name = f"wae-{jack_server}"
        self.log_path = tmp_path / "serve.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "waeserver", "serve", "--model", str(bundle), "--osc-port", str(self.port),
                 "--jack-name", self.name, "--jack-server", jack_server, "--no-jack-connect",
                 "--preset-dir", str(tmp_path / "presets")], stdout=log, stderr=subprocess.STDOUT)
        self.monitor = OscPeer()
        self.dest = ("127.0.0.1", self.port)
        deadline = time.monotonic() + 60
        while not self.monitor.messages_now("/done"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"the daemon did not start:\n{self.log_path.read_text()[-3000:]}")
            self.monitor.send(self.dest, "/wae/notify", [1])
            time.sleep(0.25)
        self.blocks: list[tuple[float, object]] = []
        self.capture = jack.Client("wae-capture", no_start_server=True, servername=jack_server)
        inport = self.capture.inports.register("in")
        self.capture.set_process_callback(
            lambda frames: self.blocks.append((time.monotonic(), inport.get_array().copy())))
        self.capture.activate()
        self.capture.connect(f"{self.name}:out_1", inport)

    def status(self) -> list:
        """The daemon's /wae/status.reply, asked now."""
        count = len(self.monitor.received)
        self.monitor.send(self.dest, "/wae/status", [])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for address, _, args, _ in self.monitor.received[count:]:
                if address == "/wae/status.reply":
                    return args
            time.sleep(0.02)
        raise AssertionError("no /wae/status.reply")

    def rms(self, start: float, end: float) -> float:
        import numpy as np

        audio = [block for t, block in self.blocks if start <= t <= end]
        return float(np.sqrt(np.mean(np.concatenate(audio) ** 2))) if audio else 0.0

    def close(self) -> None:
        if getattr(self, "capture", None) is not None:
            self.capture.deactivate()
            self.capture.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.monitor.close()


@pytest.fixture
def daemon(jack_server, test_bundle, tmp_path):
    d = LiveDaemon(jack_server, test_bundle, tmp_path)
    yield d
    d.close()


def notes_started(d: LiveDaemon) -> list[int]:
    return [args[0] for _, args in d.monitor.messages("/wae/n_go")]


def fader_states(d: LiveDaemon) -> list[list[float]]:
    return [args[1:] for _, args in d.monitor.messages("/wae/state") if args[0] == "styles"]


def test_supercollider_plays_the_daemon(daemon, tmp_path):
    before = daemon.status()
    start = time.monotonic()
    out = run_sclang(f"""
~waeAddr = NetAddr("127.0.0.1", {daemon.port});
{sc_path(SC / "pbind_example.scd")}.load;
fork {{
    while {{ ~wae.styleNames.isEmpty }} {{ 0.05.wait }};
    ("STYLES " ++ ~wae.styleNames.join(",")).postln;
    ~wae.style(\\flute, 1.5);
    ~wae.note(72, 120, 0.3);
    0.1.wait;
    Pdef(\\waeMelody).play(quant: 0); Tdef(\\waeMorph).play(quant: 0);
    1.5.wait;
    Pdef(\\waeMelody).stop; Tdef(\\waeMorph).stop;
    ~wae.status {{ |st| ("STATUS " ++ st.model ++ "," ++ st.voices).postln; 0.exit }};
}};
""", tmp_path)
    end = time.monotonic()
    assert "STYLES piano,flute,violin" in out                   # the daemon's own info reply
    assert "test-bundle" in out.split("STATUS ")[1].splitlines()[0]
    states = fader_states(daemon)
    assert [1.0, 1.5, 0.0] in states
    # the Routine morph: piano fading into flute, the weights summing to 1
    assert any(0 < f < 0.5 and abs(p + f - 1) < 1e-3 and v == 0 for p, f, v in states), states
    started = notes_started(daemon)
    assert {72, 60, 63, 67} <= set(started), started
    after = daemon.status()
    assert after[6] + after[7] >= before[6] + before[7] + 4     # cache hits + misses: notes rendered
    assert daemon.rms(start, end) > 1e-4 and daemon.rms(0, start) < daemon.rms(start, end)


def write_tone(path: Path, rate: int = 22050) -> Path:
    """A second of A4, 10 ms attack and a decay: a note with a clear pitch to encode."""
    import numpy as np
    import soundfile as sf

    t = np.arange(rate) / rate
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440 * t) * np.minimum(t / 0.01, 1) * np.exp(-2 * t), rate)
    return path


def test_pd_plays_the_daemon(daemon, tmp_path):
    before = daemon.status()
    start = time.monotonic()
    tone = write_tone(tmp_path / "tone.wav")
    # the encode first: a fresh daemon's first one takes some 1.4 s here (its sampler's first imports)
    console = run_pd(daemon.port, f"wae-z-0 1; wae-encode {tone}; wae-sample 0.05; wae-fader-2 1.25; wae-key 12; "
                     "wae-note 64 110 0.4; wae-poll 1", tmp_path, run_ms=3000)
    end = time.monotonic()
    assert [1.0, 0.0, 1.25] in fader_states(daemon)              # fader 2 named violin by the daemon
    zs = [args[1:] for _, args in daemon.monitor.messages("/wae/state") if args[0] == "z"]
    assert [1.0, 0.0, 0.0] in zs
    # the file's point reached the display and is the one the daemon set last; 0.05 s is refused
    shown = [line.split(": ", 1)[1] for line in console.splitlines() if line.startswith("show-point:")]
    assert len(shown) == 1, console[-2000:]
    assert [float(v) for v in shown[0].split()] == pytest.approx(zs[-1], abs=1e-5) and zs[-1] != [1.0, 0.0, 0.0]
    assert "show-refused: list /wae/sample/record" in console
    assert {60, 64} <= set(notes_started(daemon))
    # the daemon's replies and events reached the patch's displays
    assert "show-styles: list piano flute violin" in console
    assert any(line.startswith("show-status:") and "test-bundle" in line for line in console.splitlines())
    assert "show-note-on: 60" in console
    after = daemon.status()
    assert after[6] + after[7] >= before[6] + before[7] + 2
    assert daemon.rms(start, end) > 1e-4 and daemon.rms(0, start) < daemon.rms(start, end)
