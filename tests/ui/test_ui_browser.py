"""`ltx2 ui` in a real browser: the server started as a user starts it (`python -m diffusers_ltx2 ui`, a separate
process, its log kept), driven by Debian's headless Chromium through Playwright, on the tiny demo model (2 steps,
9 frames, 64x64). One server and one browser serve every test of the module.

Set LTX2_UI_SCREENSHOT=PATH to keep the screenshot of the page (the README's)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest

from media_files import frame_colours, tone, write_video

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.sync_api", reason="the ui browser tests need playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):  # .ci/run installs it; a bare machine may lack it
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

KEY = "sk-ltx2-ui-test-9f8e7d6c5b4a3210"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _FakeAPI(BaseHTTPRequestHandler):
    """An LTX API stand-in that refuses every key (and remembers the Authorization headers it saw)."""

    seen: list = []

    def do_POST(self):  # noqa: N802
        type(self).seen.append(self.headers.get("Authorization", ""))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": "invalid api key"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui_browser")
    api = ThreadingHTTPServer(("127.0.0.1", 0), _FakeAPI)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    port, out, log = _free_port(), root / "out", root / "server.log"
    env = dict(os.environ, LTX_API_KEY=KEY, XDG_CACHE_HOME=str(root / "cache"), PYTHONPATH=str(REPO),
               PYTHONUNBUFFERED="1")
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "diffusers_ltx2", "ui", "--port", str(port), "--output-dir", str(out),
             "--api-model-id", "tiny-test", "--api-base-url", f"http://127.0.0.1:{api.server_port}"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=root)
    deadline = time.monotonic() + 300
    while f"http://127.0.0.1:{port}/" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    media = root / "media"
    media.mkdir()
    files = {"clip": write_video(media / "clip.mp4", frame_colours(17, 64, 64), fps=24,
                                 audio=tone(1.0, 48000, freqs=(440.0, 440.0)), sample_rate=48000),
             "notes": str(media / "notes.mp4"), "empty": str(media / "silence.wav")}
    Path(files["notes"]).write_text("this is a text file, not a video\n")
    Path(files["empty"]).write_bytes(b"")
    (root / "secret.txt").write_text("outside the output folder\n")
    yield dict(url=f"http://127.0.0.1:{port}/", port=port, out=out, log=log, root=root, files=files, api=_FakeAPI)
    process.terminate()
    process.wait(30)
    api.shutdown()


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(  # a fresh profile (--user-data-dir)
            str(server["root"] / "chromium-profile"), executable_path=CHROMIUM, args=FLAGS,
            viewport={"width": 1400, "height": 1000})
        page = browser.new_page()
        outside = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server["url"]) else None)
        page.goto(server["url"])
        page.wait_for_selector("#ltx2-queue", timeout=60000)
        page.outside_requests = outside
        yield page
        browser.close()


def _tab(page, label: str) -> None:
    """Open a mode's tab (Gradio moves tabs that do not fit into a "..." menu)."""
    tab = page.get_by_role("tab", name=label, exact=True)
    if tab.count() and tab.is_visible():
        tab.click()
        return
    page.locator("button[aria-label='More tabs']").click()
    page.locator(".overflow-dropdown button").filter(has_text=label).first.click()


def _set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True).first
    box.fill(str(value))
    box.press("Tab")


def _screenshot(page, path: str) -> None:
    """The page as a PNG of 128 colours (small enough to commit)."""
    import io

    import PIL.Image

    image = PIL.Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    image.quantize(colors=128, method=PIL.Image.Quantize.MEDIANCUT).save(path, optimize=True)


def _shows(page, text: str) -> None:
    """The page's message line comes to hold `text` (Gradio updates it asynchronously)."""
    page.wait_for_function("text => (document.querySelector('#ltx2-message-text') || {}).innerText?.includes(text)",
                           arg=text, timeout=60000)


def _queue(page, label: str) -> int:
    before = page.inner_text("#ltx2-message-text") if page.locator("#ltx2-message-text").count() else None
    slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
    page.locator(f"#ltx2-queue-{slug}").click()
    page.wait_for_function("prev => { const m = document.querySelector('#ltx2-message-text');"
                           " return m && m.innerText !== prev && /^(queued job #|Error)/.test(m.innerText); }",
                           arg=before, timeout=60000)
    text = page.inner_text("#ltx2-message-text")
    assert text.startswith("queued job #"), text
    return int(text.split("#")[1].split()[0])


def _wait_state(page, job: int, states=("done",), timeout=300000) -> str:
    page.wait_for_function(
        "([job, states]) => { const r = document.querySelector(`#ltx2-queue tr[data-job='${job}']`);"
        " return r && states.includes(r.dataset.state); }", arg=[job, list(states) + ["failed"]], timeout=timeout)
    row = page.locator(f"#ltx2-queue tr[data-job='{job}']")
    return row.get_attribute("data-state")


def _played(page, server, job: int) -> dict:
    """The gallery's player of `job` loads the MP4 (metadata read by Chromium) and the file it points at has a
    video and an audio stream (read with PyAV)."""
    video = f"#ltx2-gallery figure[data-job='{job}'] video"
    page.wait_for_selector(video, timeout=60000)
    page.wait_for_function(f"() => document.querySelector(\"{video}\").readyState >= 1", timeout=60000)
    duration = page.locator(video).evaluate("v => v.duration")
    src = page.locator(video).get_attribute("src")
    connection = http.client.HTTPConnection("127.0.0.1", server["port"])
    connection.request("GET", src)
    reply = connection.getresponse()
    assert reply.status == 200
    path = server["root"] / f"job{job}.mp4"
    path.write_bytes(reply.read())
    with av.open(str(path)) as container:
        streams = sorted(s.type for s in container.streams)
    return dict(duration=duration, streams=streams, path=path)


def test_page_loads_labelled_random_and_offline(page, server):
    assert "RANDOM WEIGHTS" in page.inner_text("#ltx2-model")
    tabs = [t.strip() for t in page.locator(".tab-wrapper .visually-hidden button").all_text_contents()]
    assert tabs == ["text/image to video", "audio to video", "video to audio (foley)", "retake", "extend",
                    "IC-LoRA control", "two-stage / distilled", "audio only"]
    assert page.outside_requests == []  # no CDN, fonts or analytics


def test_text_to_video_job_with_progress_per_step(page, server):
    page.locator("#ltx2-prompt textarea").fill("a red bird over the sea")
    _tab(page, "text/image to video")
    job = _queue(page, "text/image to video")
    assert _wait_state(page, job) == "done"
    row = page.locator(f"#ltx2-queue tr[data-job='{job}']")
    assert row.get_attribute("data-events") == "2"  # one progress update per step
    assert row.locator(".ltx2-steps").text_content() == "1/2 2/2"
    played = _played(page, server, job)
    assert played["streams"] == ["audio", "video"] and abs(played["duration"] - 9 / 24) < 0.05
    _screenshot(page, os.environ.get("LTX2_UI_SCREENSHOT") or str(server["root"] / "page.png"))  # the README's
    # the settings saved beside it re-run with the CLI to the same clip (the latents: tests/ui/test_ui.py)
    settings = next(server["out"].glob(f"*-{job:03d}-*.json"))
    again = server["root"] / "again.mp4"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "diffusers_ltx2", "generate", "--from-settings", str(settings),
                    "--output", str(again), "--no-progress"], check=True, env=env, capture_output=True)
    for decode in (dict(video=0), dict(audio=0)):
        with av.open(str(played["path"])) as a, av.open(str(again)) as b:
            assert all(np.array_equal(x.to_ndarray(), y.to_ndarray()) for x, y in zip(a.decode(**decode),
                                                                                    b.decode(**decode)))


def test_retake_job_on_an_uploaded_clip(page, server):
    _tab(page, "retake")
    page.locator("#ltx2-input-retake input[type=file]").set_input_files(server["files"]["clip"])
    _set_number(page, "Window start (s)", 0.2)
    _set_number(page, "Window end (s)", 0.5)
    page.wait_for_function("() => (document.querySelector('#ltx2-retake-window') || {}).innerText"
                           "?.includes('window 0.2-0.5 s')", timeout=60000)
    job = _queue(page, "retake")
    assert _wait_state(page, job) == "done"
    assert _played(page, server, job)["streams"] == ["audio", "video"]


def test_ic_lora_control_job_with_preview(page, server):
    _tab(page, "IC-LoRA control")
    page.locator("#ltx2-control-video input[type=file]").set_input_files(server["files"]["clip"])
    page.get_by_label("canny", exact=True).check()
    page.wait_for_selector("#ltx2-control-preview video", timeout=60000)
    job = _queue(page, "IC-LoRA control")
    assert _wait_state(page, job) == "done"
    assert _played(page, server, job)["streams"] == ["audio", "video"]


def test_cancel_mid_run_stops_within_a_step_and_the_next_job_runs(page, server):
    _tab(page, "text/image to video")
    _set_number(page, "Steps", 20000)
    long = _queue(page, "text/image to video")
    page.wait_for_function(f"() => +(document.querySelector(\"#ltx2-queue tr[data-job='{long}']\") || "
                           "{dataset: {}}).dataset.events >= 1", timeout=120000)
    _set_number(page, "Job #", long)
    page.locator("#ltx2-cancel").click()
    assert _wait_state(page, long, ("cancelled",), timeout=60000) == "cancelled"
    note = page.locator(f"#ltx2-queue tr[data-job='{long}'] .ltx2-job-cancel").inner_text()
    asked, stopped = (int(part.split("step ")[1]) for part in note.split(", "))
    assert stopped - asked <= 1 and stopped < 20000, note
    _set_number(page, "Steps", 2)
    after = _queue(page, "text/image to video")
    assert _wait_state(page, after) == "done"


def test_bad_uploads_show_an_error_and_the_server_keeps_serving(page, server):
    _tab(page, "video to audio (foley)")
    page.locator("#ltx2-input-video-to-audio--foley input[type=file]").set_input_files(server["files"]["notes"])
    _shows(page, "Error: --input notes.mp4: is not a readable video")
    _tab(page, "audio to video")
    page.locator("#ltx2-audio input[type=file]").set_input_files(server["files"]["empty"])
    _shows(page, "Error: --audio silence.wav: the file is empty (0 bytes)")
    page.locator("#ltx2-queue-audio-to-video").click()  # queued anyway: refused with the same line
    _shows(page, "Error: --audio silence.wav: the file is empty (0 bytes)")
    assert "Traceback" not in page.content()
    _tab(page, "text/image to video")
    job = _queue(page, "text/image to video")
    assert _wait_state(page, job) == "done"


def test_files_outside_the_output_folder_are_refused(server):
    out = server["out"]
    served = next(out.glob("*.json"))
    for path, status in ((f"/gradio_api/file={served}", 200), (f"/gradio_api/file={out}/../secret.txt", 403),
                         (f"/gradio_api/file={out}/%2e%2e/secret.txt", 403),
                         (f"/gradio_api/file={out}/%252e%252e/secret.txt", 403),
                         (f"/gradio_api/file={server['root']}/secret.txt", 403), ("/gradio_api/file=/etc/passwd", 403),
                         ("/gradio_api/file/etc/passwd", 403), ("/gradio_api/file=http://127.0.0.1:9/x", 403)):
        connection = http.client.HTTPConnection("127.0.0.1", server["port"])
        connection.request("GET", path)
        reply = connection.getresponse()
        body = reply.read()
        assert reply.status == status, path
        assert b"outside the output folder" not in body and b"root:" not in body


def test_the_api_key_is_used_but_never_shown_logged_or_saved(page, server):
    page.get_by_text("Prompt source", exact=True).click()
    page.get_by_label("LTX API", exact=True).check()
    _tab(page, "text/image to video")
    job = _queue(page, "text/image to video")
    assert _wait_state(page, job, ("failed",)) == "failed"
    error = page.locator(f"#ltx2-queue tr[data-job='{job}'] .ltx2-job-error").inner_text()
    assert "key" in error.lower() and "LTX_API_KEY" in error, error
    assert server["api"].seen and all(h == f"Bearer {KEY}" for h in server["api"].seen)  # it was sent, only there
    page.get_by_label("local text encoder", exact=True).check()
    assert KEY not in page.content()
    assert KEY not in server["log"].read_text()
    for path in server["out"].rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    saved = [json.loads(p.read_text()) for p in server["out"].glob("*.json")]
    assert saved and all(KEY not in json.dumps(s) for s in saved)
