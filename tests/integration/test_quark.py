"""The `Wae` quark with the real programs: installed with `Quarks.install` into a fresh sclang
user folder, its UnitTests run by sclang against the real daemon, and scsynth on the same dummy
JACK server hearing the daemon through `SoundIn` and reading its rendered notes into Buffers."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
from test_patches import QUARK, run_sclang, sc_path
from test_render import running_daemon

from waeserver.dsp.pitch import estimate_pitch


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with running_daemon(tmp_path_factory) as (d, _):
        yield d


def test_the_quark_installs_into_a_fresh_user_folder_and_its_unit_tests_pass(daemon, tmp_path):
    home = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data")}
    out = run_sclang(f"""
Quarks.install({sc_path(QUARK)});
("INSTALLED " ++ Quarks.installed.collect(_.name).join(",")).postln;
0.exit;
""", tmp_path, env=home, quark=False)
    assert "INSTALLED Wae" in out
    conf = tmp_path / "config" / "SuperCollider" / "sclang_conf.yaml"
    assert str(QUARK) in conf.read_text()             # the fresh user folder's config now includes it
    # a new sclang compiles the class library with the quark in it and runs its UnitTests
    out = run_sclang(f"""
fork {{
    var help = {sc_path(QUARK / "HelpSource" / "Classes" / "Wae.schelp")}, text = File.readAllString(help);
    ("CLASS " ++ \\Wae.asClass ++ " " ++ Quarks.isInstalled("Wae")).postln;
    // the help parses and documents every public method
    ("HELP " ++ SCDoc.parseFileFull(help).notNil ++ " UNDOCUMENTED " ++ Wae.methods.collect(_.name).reject {{ |m|
        m.asString.beginsWith("pr") or: {{ m.asString.endsWith("_")
            or: {{ m == \\init or: {{ text.contains("METHOD:: " ++ m) }} }} }}
    }}).postln;
    TestWae.run(true, false);
    UnitTest.failures.do {{ |f| ("FAILED " ++ f.testMethod.name ++ ": " ++ f.message).postln }};
    UnitTest.passes.collect {{ |p| p.testMethod.name }}.asSet.do {{ |name| ("PASSED " ++ name).postln }};
    ("COUNT " ++ UnitTest.passes.size ++ " " ++ UnitTest.failures.size).postln;
    0.exit;
}};
""", tmp_path, timeout=90, env={**home, "WAE_TEST_PORT": str(daemon.cfg.osc_port)}, quark=False)
    assert "CLASS Wae true" in out
    assert "HELP true UNDOCUMENTED [  ]" in out
    assert "FAILED" not in out, out[-3000:]
    methods = set(re.findall(r"^\s*(test_\w+) \{", (QUARK / "Tests" / "TestWae.sc").read_text(), re.M))
    assert len(methods) >= 10 and set(re.findall(r"^PASSED (\w+)", out, re.M)) == methods
    passes, failures = map(int, re.search(r"^COUNT (\d+) (\d+)", out, re.M).groups())
    assert (passes, failures) == (52, 0)              # every assertion of every test method


def test_scsynth_hears_the_daemon_reads_its_renders_and_is_sampled_by_it(daemon, tmp_path):
    """The contract's way in: SC_JACK_DEFAULT_INPUTS set before booting, then SoundIn; and out:
    scsynth's first output into the daemon's in_1, a tone played while `w.sample` records it."""
    heard, rendered = tmp_path / "heard.wav", tmp_path / "rendered.wav"
    before = daemon.inst.state.z.copy()
    out = run_sclang(f"""
"SC_JACK_DEFAULT_INPUTS".setenv("waeserver");
"SC_JACK_DEFAULT_OUTPUTS".setenv("waeserver:in_1");
s = Server.default;
s.options.numInputBusChannels = 2;
s.options.numOutputBusChannels = 2;
s.waitForBoot {{
    var w = Wae(NetAddr("127.0.0.1", {daemon.cfg.osc_port})), b, buf, point;
    b = Buffer.alloc(s, s.sampleRate * 1.5, 1);
    s.sync;
    {{ RecordBuf.ar(SoundIn.ar(0), b, loop: 0, doneAction: 2); Silent.ar }}.play;
    w.mix(\\piano, 1);
    w.note(69, 110, 0.8);
    1.6.wait;
    b.write({sc_path(heard)}, "wav", "float");
    w.renderBuffer(s, 64, 100) {{ |rb| buf = rb }};
    while {{ buf.isNil }} {{ 0.05.wait }};
    ("RENDERED " ++ buf.numFrames ++ " " ++ buf.path).postln;
    buf.write({sc_path(rendered)}, "wav", "float");
    s.sync;
    // 1.2 s of in_1 from now; the tone starts 0.1 s into the take (the note must fill half the model's)
    w.onFail = {{ |address, reason| ("REFUSED " ++ reason).postln; point = [] }};
    w.sample(1.2) {{ |p| point = p }};
    0.1.wait;
    {{ SinOsc.ar(440, 0, 0.5) * EnvGen.kr(Env.perc(0.01, 1.2), doneAction: 2) }}.play;
    while {{ point.isNil }} {{ 0.05.wait }};
    ("SAMPLED " ++ point.join(" ")).postln;
    s.quit;
    0.3.wait;
    0.exit;
}};
""", tmp_path, timeout=60, env={"JACK_DEFAULT_SERVER": daemon.cfg.jack_server})
    assert "connected  waeserver:out_1 to SuperCollider:in_1" in out      # scsynth's own JACK log
    wave, rate = sf.read(heard)
    assert rate == 48000 and np.abs(wave).max() > 1e-3
    assert estimate_pitch(wave, rate).midi == pytest.approx(69, abs=0.3)   # A4 came through SoundIn
    frames, path = re.search(r"^RENDERED (\d+) (\S+)", out, re.M).groups()
    assert path.startswith(daemon.cfg.render_dir) and int(frames) == sf.info(path).frames
    note, _ = sf.read(rendered)
    np.testing.assert_allclose(note, sf.read(path)[0], atol=1e-6)       # the Buffer holds the render
    assert estimate_pitch(note, rate).midi == pytest.approx(64, abs=0.3)
    # the tone went through JACK into the daemon, whose point is the one w.sample answered
    assert "connected  SuperCollider:out_1 to waeserver:in_1" in out and "REFUSED" not in out, out[-2000:]
    point = [float(v) for v in re.search(r"^SAMPLED (.*)$", out, re.M).group(1).split()]
    assert len(point) == len(before) and point == pytest.approx(daemon.inst.state.z.tolist(), abs=1e-6)
    assert not np.allclose(point, before)
