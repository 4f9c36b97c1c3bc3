"""``REPORT/index.html`` in a real headless Chromium: every resource found, every image decoded,
every sound file with a duration; for a page ``evaluate`` writes on the tiny dataset and for the
reports of the shipped bundles in docs/reports/.

Chromium is driven over ``--remote-debugging-pipe`` (the DevTools protocol: NUL-terminated JSON on
file descriptors 3 and 4), so the checks need no package beyond the browser itself.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
from bundles import make_test_bundle

from waeserver.cli import main as cli_main
from waeserver.model.evaluation import evaluate
from waeserver.model.training import train
from waeserver.sound.bundle import load_wae_or_bundle
from waeserver.sound.study_page import write_study_page

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "docs" / "reports").glob("*/index.html"))

# Waits for every image to decode and every <audio> to have its metadata (or an error), then
# reports what it found; a resource that never answers leaves the promise waiting until the timeout.
PAGE_CHECK = """(async () => {
  const images = [...document.images];
  const decoded = await Promise.all(images.map(i => i.decode().then(() => i.naturalWidth > 0, () => false)));
  const audio = [...document.querySelectorAll('audio')];
  const durations = await Promise.all(audio.map(a => new Promise(done => {
    const answer = () => done(a.error ? -1 : a.duration);
    if (a.readyState >= 1 || a.error) answer();
    else { a.addEventListener('loadedmetadata', answer, {once: true});
           a.addEventListener('error', answer, {once: true}); }
  })));
  return {images: images.map((i, k) => [i.getAttribute('src'), decoded[k], i.naturalWidth]),
          audio: audio.map((a, k) => [a.getAttribute('src'), durations[k]]),
          height: document.documentElement.scrollHeight};
})()"""


class Chromium:
    """A headless Chromium and one page, over the DevTools pipe."""

    def __init__(self, profile: Path, timeout: float = 30.0):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            pytest.fail("chromium is not installed (make test installs it from Debian)")
        self.deadline = time.monotonic() + timeout
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        # the browser reads commands on fd 3 and writes answers on fd 4; high copies survive until then
        keep = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]

        def as_fds_3_and_4():
            os.dup2(keep[0], 3)
            os.dup2(keep[1], 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=as_fds_3_and_4, pass_fds=(3, 4, *keep))
        for fd in (to_browser, from_browser, *keep):
            os.close(fd)
        self._buffer, self._next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", session=True)

    def _message(self) -> dict:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_for(self, method: str) -> dict:
        while True:
            seen = next((e for e in self.events if e.get("method") == method), None)
            if seen is not None:
                self.events.remove(seen)
                return seen
            self.events.append(self._message())

    def close(self) -> None:
        try:
            os.write(self._out, json.dumps({"id": 0, "method": "Browser.close", "params": {}}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)


def check_page(page: Path, profile: Path, screenshot: Path | None = None) -> dict:
    """Load ``page`` in Chromium: the page check's result plus ``failed`` (resources that did not
    load: URL and reason) and ``exceptions`` (script errors); a full-page screenshot if asked."""
    browser = Chromium(profile)
    try:
        browser.call("Page.navigate", session=True, url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        result = browser.call("Runtime.evaluate", session=True, expression=PAGE_CHECK, awaitPromise=True,
                              returnByValue=True)["result"]["value"]
        if screenshot is not None:
            shot = browser.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        events = browser.events
        # a media load the player itself stops (it has what it needs) is reported canceled, not failed
        urls = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in events
                if e.get("method") == "Network.requestWillBeSent"}
        result["failed"] = [(urls.get(e["params"]["requestId"]), e["params"].get("errorText")) for e in events
                            if e.get("method") == "Network.loadingFailed" and not e["params"].get("canceled")]
        result["failed"] += [(r["params"]["response"]["url"], r["params"]["response"]["status"]) for r in events
                             if r.get("method") == "Network.responseReceived"
                             and r["params"]["response"].get("status", 200) >= 400]
        result["exceptions"] = [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"]
        return result
    finally:
        browser.close()


def assert_page_whole(result: dict, images: int, sounds: int) -> None:
    assert not result["failed"], result["failed"]
    assert not result["exceptions"], result["exceptions"]
    assert len(result["images"]) >= images and len(result["audio"]) >= sounds, result
    broken = [i for i in result["images"] if not i[1] or i[2] <= 0]
    assert not broken, broken
    silent = [a for a in result["audio"] if not (a[1] is not None and a[1] > 0.5)]
    assert not silent, silent


@pytest.fixture(scope="module")
def tiny_report(tiny_dataset, tmp_path_factory):
    """The study on a tiny WAE-Fader run (3 epochs, its latent history) and a random test bundle
    (given the run's history, which it does not match)."""
    root = tmp_path_factory.mktemp("study")
    train(tiny_dataset, "wae-fader", root / "run", {"epochs": 3, "batch_size": 16}, device="cpu", progress=False)
    models = [root / "run", make_test_bundle(root / "bundle")]
    out = root / "report"
    report = evaluate(models, tiny_dataset, out, device="cpu", progress=False, per_style=8, classifier_epochs=4,
                      load=load_wae_or_bundle)
    write_study_page(report, models, tiny_dataset, out, "cpu", [None, root / "run"], max_frames=3, notes=2)
    return out


def test_evaluate_writes_a_page_with_animations_and_players(tiny_report):
    page = (tiny_report / "index.html").read_text()
    for name in ("latent-run-raw.gif", "latent-run-tsne.gif", "latent-bundle-tsne.gif", "latent.png",
                 "reconstruction-bundle.png", "ablation.md", "report.json"):
        assert name in page and (tiny_report / name).is_file(), name
    # the run's encoder is its own history's best epoch; the random bundle's matches none
    assert re.search(r"gives the points of epoch [23] of this history", page) and "matches none of its epochs" in page
    sounds = sorted((tiny_report / "sounds").rglob("*.ogg"))
    # per style: the recording and one reconstruction per inverter (run: Griffin-Lim; bundle: and
    # its real-time one), two generated sets; one mix each
    assert len(sounds) == 3 * (1 + 1 + 2) + 1 + 3 * (1 + 2 + 2) + 1
    assert page.count("<audio") == len(sounds)
    assert "0.5 piano + 0.5 flute" in page and "harmonic (real-time)" in page
    assert sf.info(str(sounds[0])).format == "OGG"


def test_the_command_refuses_histories_it_cannot_use_before_any_work(tiny_dataset, tmp_path, capsys):
    assert cli_main(["evaluate", "--model", "a", "b", "--data", str(tiny_dataset), "--out", str(tmp_path / "r"),
                     "--latent-history", "x"]) == 1
    assert "one path per --model (2), got 1" in capsys.readouterr().err
    assert cli_main(["evaluate", "--model", "a", "--data", str(tiny_dataset), "--out", str(tmp_path / "r"),
                     "--latent-history", str(tmp_path / "nowhere")]) == 1
    assert "no latent_history.npz there" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_page_loads_whole_in_chromium(tiny_report, tmp_path):
    shot = tmp_path / "page.png"
    start = time.monotonic()
    result = check_page(tiny_report / "index.html", tmp_path / "profile", shot)
    assert time.monotonic() - start < 30
    assert_page_whole(result, images=7, sounds=29)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_sound_file_is_caught(tiny_report, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_report, broken)
    next((broken / "sounds").rglob("*.ogg")).unlink()
    (broken / "latent.png").unlink()
    result = check_page(broken / "index.html", tmp_path / "profile")
    assert len(result["failed"]) >= 2
    assert sum(not i[1] for i in result["images"]) == 1 and sum(a[1] == -1 for a in result["audio"]) == 1


@pytest.mark.parametrize("page", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_the_shipped_reports_load_whole(page, tmp_path):
    assert_page_whole(check_page(page, tmp_path / "profile"), images=3, sounds=20)
    assert sum(f.stat().st_size for f in page.parent.rglob("*") if f.is_file()) < 20e6
