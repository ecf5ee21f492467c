"""The web app in a real browser: Playwright drives the system Chromium (never a downloaded browser).

Run with ``make test-browser`` (``pytest -m browser``; it runs ``make demo-vos`` first when the demo's FEELVOS
checkpoint is missing). VOS checkpoint: ``VIDSEG_APP_TEST_CKPT_VOS``, else the demo's: the test checks that the
painted object is tracked, which needs a trained model (a tiny FEELVOS trained for 40 steps reached a mean IoU of
about 0.04: it does not track). VPS: ``VIDSEG_APP_TEST_CKPT_VPS``, else the demo's, else a tiny VPSNet trained
here (that test checks the outputs' shapes, not their quality). Screenshots go to the test's tmp folder, and
also to ``VIDSEG_APP_SCREENSHOTS`` (e.g. docs/) when set.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tests.helpers.training_runs import subprocess_env
from vidseg.app.config import DEMO_VOS_CKPT, DEMO_VPS_CKPT
from vidseg.app.inputs import TOY_VOS_SIZE, write_toy_vos_clip, write_toy_vps_clip
from vidseg.data.video import count_frames

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
# Mean IoU of the painted object over the clip with a checkpoint that tracks (the demo's reaches about 0.79
# on toy VOS clip 0 painted this way); the painted frame itself must match the ground truth closely.
TRACKING_IOU_FLOOR = 0.5
PAINTED_IOU_FLOOR = 0.7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vos_checkpoint() -> Path:
    """A FEELVOS checkpoint that tracks: the env's or the demo's (``make demo-vos``, which make test-browser runs)."""
    given = os.environ.get("VIDSEG_APP_TEST_CKPT_VOS") or (str(REPO / DEMO_VOS_CKPT)
                                                         if (REPO / DEMO_VOS_CKPT).is_file() else None)
    if not given:
        pytest.fail(f"no trained FEELVOS: run `make demo-vos` (writes {DEMO_VOS_CKPT}) or set "
                    "VIDSEG_APP_TEST_CKPT_VOS=<ckpt>; `make test-browser` runs the demo when it is missing")
    return Path(given)


@pytest.fixture(scope="module")
def vps_checkpoint(tmp_path_factory) -> Path:
    given = os.environ.get("VIDSEG_APP_TEST_CKPT_VPS") or (str(REPO / DEMO_VPS_CKPT)
                                                         if (REPO / DEMO_VPS_CKPT).is_file() else None)
    if given:
        return Path(given)
    from tests.helpers.vps_training import train_tiny_vps
    from vidseg.data.toy_vps import generate_toy_vps

    tmp = tmp_path_factory.mktemp("vps_ckpt")
    root = generate_toy_vps(tmp / "data", format="cityscapes_vps", seed=0, videos=1, val_videos=1, height=64,
                            width=128)
    train_tiny_vps(root, tmp / "run")
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def server(vos_checkpoint, vps_checkpoint, tmp_path_factory):
    """The app on a free port (a subprocess, as `make app` starts it); yields its URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "app.log"
    proc = subprocess.Popen([sys.executable, "-m", "vidseg.app", f"ckpt_vos={vos_checkpoint}",
                             f"ckpt_vps={vps_checkpoint}", f"port={port}", "max_upload_mb=5"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=subprocess_env(), cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the app did not start:\n{log.read_text()}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def page(server, tmp_path):
    """A Chromium page on the app that records every request leaving localhost (the app must work offline)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} missing: `apt-get install -y chromium` (make test-browser does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.external = []
        page.on("request", lambda r: page.external.append(r.url)
                if not r.url.startswith((server[:-1], "data:", "blob:")) else None)
        page.goto(server)
        page.wait_for_selector("#vos-run", timeout=60_000)
        yield page
        browser.close()


def _screenshot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("VIDSEG_APP_SCREENSHOTS"):
        target = Path(os.environ["VIDSEG_APP_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)


def _wait_text(page, selector: str, text: str, timeout: float = 180_000) -> str:
    page.wait_for_function(f"(document.querySelector({selector!r})?.innerText || '').includes({text!r})",
                           timeout=timeout)
    return page.inner_text(selector)


def _paint(page, mask: np.ndarray) -> None:
    """Paint ``mask`` (H, W) bool on the editor's canvas by mouse: one stroke per run of pixels, every 3rd row
    (the brush's radius is 3 image pixels)."""
    canvas = page.query_selector("#vos-editor canvas")
    box = canvas.bounding_box()
    zoom = float(page.inner_text("#vos-editor [class*=zoom]").strip().rstrip("%")) / 100
    height, width = mask.shape
    x0 = box["x"] + (box["width"] - width * zoom) / 2  # the frame is centred in the canvas
    y0 = box["y"] + (box["height"] - height * zoom) / 2
    for y in range(0, height, 3):
        xs = np.nonzero(mask[y])[0]
        for run in np.split(xs, np.nonzero(np.diff(xs) > 1)[0] + 1) if len(xs) else []:
            page.mouse.move(x0 + (run[0] + 0.5) * zoom, y0 + (y + 0.5) * zoom)
            page.mouse.down()
            page.mouse.move(x0 + (run[-1] + 0.5) * zoom, y0 + (y + 0.5) * zoom, steps=2)
            page.mouse.up()


def _download(page, selector: str, suffix: str) -> bytes:
    hrefs = page.eval_on_selector_all(f"{selector} a", "els => els.map(e => e.href)")
    href = next(h for h in hrefs if h.split("?")[0].endswith(suffix))
    return page.request.get(href).body()


def test_vos_tab_upload_paint_run_download(page, vos_checkpoint, tmp_path):
    video, truth = write_toy_vos_clip("toy VOS clip 0", tmp_path)
    page.set_input_files("#vos-upload input[type=file]", str(video))
    assert "24 frames, 224x128" in _wait_text(page, "#vos-status", "frames")
    time.sleep(1)  # the editor draws the frame
    _paint(page, ndimage.binary_erosion(truth[0] == 1, iterations=2))
    _screenshot(page, tmp_path, "app_vos_paint.png")
    page.click("#vos-run")
    done = _wait_text(page, "#vos-progress", "done:")
    assert "24 frames" in done and "frames/s" in done
    page.wait_for_selector("#vos-overlay video", timeout=60_000)
    time.sleep(1)
    _screenshot(page, tmp_path, "app_vos_result.png")
    assert "frame 0: object 1" in page.inner_text("#vos-annotations")

    (tmp_path / "overlay.mp4").write_bytes(_download(page, "#vos-files", ".mp4"))
    assert count_frames(tmp_path / "overlay.mp4") == TOY_VOS_SIZE["frames"]
    archive = zipfile.ZipFile(io.BytesIO(_download(page, "#vos-files", ".zip")))
    names = sorted(archive.namelist())
    assert names == [f"masks/{i:05d}.png" for i in range(TOY_VOS_SIZE["frames"])]
    ious = []
    for index, name in enumerate(names):
        image = Image.open(archive.open(name))
        assert image.mode == "P"  # DAVIS palette PNG
        mask, gt = np.asarray(image) == 1, truth[index] == 1
        ious.append((mask & gt).sum() / max((mask | gt).sum(), 1))
    print(f"IoU per frame: {np.round(ious, 2).tolist()}")
    assert ious[0] > PAINTED_IOU_FLOOR
    assert np.mean(ious[1:]) > TRACKING_IOU_FLOOR
    assert page.external == []


def _scrub(page, index: int, frames: int) -> None:
    """Click the frame slider at ``index`` and wait for the new frame's editor."""
    box = page.query_selector("#vos-frame input[type=range]").bounding_box()
    page.mouse.click(box["x"] + box["width"] * index / (frames - 1), box["y"] + box["height"] / 2)
    page.wait_for_function(f"document.querySelector('#vos-frame input[type=number]')?.value === '{index}'",
                           timeout=30_000)
    time.sleep(1)  # the slider's release event draws a fresh editor
    page.wait_for_function("document.querySelector('#vos-editor canvas') && "
                           "!document.querySelector('#vos-editor').innerText.includes('processing')",
                           timeout=60_000)
    time.sleep(1)


def _pick_colour(page, nth: int) -> None:
    """The brush's ``nth`` colour (0-based): object ``nth + 1``."""
    page.click("#vos-editor button[aria-label=Color]")
    page.locator("#vos-editor button.color").nth(nth).click()
    page.click("#vos-editor button[aria-label=Brush]")  # closes the palette


def _masks(page) -> list[np.ndarray]:
    archive = zipfile.ZipFile(io.BytesIO(_download(page, "#vos-files", ".zip")))
    return [np.asarray(Image.open(archive.open(name))) for name in sorted(archive.namelist())]


def test_vos_tab_adds_an_object_at_a_later_frame_and_resumes_there(page, tmp_path):
    """Object 1 painted on frame 0 and run; then object 2 painted on frame 8 and run again: the second run
    resumes at frame 8 (frames 0-7 kept) and tracks both."""
    video, truth = write_toy_vos_clip("toy VOS clip 0", tmp_path)
    frames = TOY_VOS_SIZE["frames"]
    page.set_input_files("#vos-upload input[type=file]", str(video))
    _wait_text(page, "#vos-status", "frames")
    time.sleep(1)
    _paint(page, ndimage.binary_erosion(truth[0] == 1, iterations=2))
    page.click("#vos-run")
    assert f"done: {frames} frames" in _wait_text(page, "#vos-progress", "done:")
    first = _masks(page)
    assert not any((m == 2).any() for m in first)

    _scrub(page, 8, frames)
    _pick_colour(page, 1)
    _paint(page, ndimage.binary_erosion(truth[8] == 2, iterations=2))
    _screenshot(page, tmp_path, "app_vos_later_object.png")
    page.click("#vos-run")
    page.wait_for_function("(document.querySelector('#vos-progress')?.innerText || '').includes('done:') && "
                           "document.querySelector('#vos-progress').innerText.includes('kept')", timeout=180_000)
    done = page.inner_text("#vos-progress")
    assert "frames 0-7 kept from the previous run, 16 segmented" in done, done
    assert "frame 0: object 1; frame 8: object 2" in page.inner_text("#vos-annotations")
    assert "2 (from frame 8)" in page.inner_text("#vos-summary")
    second = _masks(page)
    assert len(second) == frames
    for index in range(8):  # kept: the first run's masks
        assert np.array_equal(second[index], first[index]), index
    ious = []
    for index in range(8, frames):
        mask, gt = second[index] == 2, truth[index] == 2
        if mask.any() or gt.any():
            ious.append((mask & gt).sum() / (mask | gt).sum())
    print(f"object 2 IoU per frame from 8: {np.round(ious, 2).tolist()}")
    assert ious[0] > PAINTED_IOU_FLOOR
    assert np.mean(ious) > TRACKING_IOU_FLOOR
    assert page.external == []


def test_vos_tab_says_what_is_wrong_with_a_bad_upload(page, tmp_path):
    fake = tmp_path / "holiday.mp4"
    fake.write_bytes(b"\x00not a video" * 1000)
    page.set_input_files("#vos-upload input[type=file]", str(fake))
    message = _wait_text(page, "#vos-status", "Error")
    assert "holiday.mp4: cannot read this video" in message and "Traceback" not in message
    assert "/tmp" not in message
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(6 * 2**20))  # over the server's max_upload_mb=5
    page.set_input_files("#vos-upload input[type=file]", str(big))
    page.wait_for_function("document.body.innerText.toLowerCase().includes('maximum allowed size')", timeout=30_000)
    page.click("#vos-run")
    assert "upload a video" in _wait_text(page, "#vos-progress", "Error")


def test_vps_tab_upload_run_download(page, tmp_path):
    video = write_toy_vps_clip("toy VPS clip 0", tmp_path)
    page.get_by_role("tab", name="Video panoptic segmentation (VPSNet)").click()
    page.set_input_files("#vps-upload input[type=file]", str(video))
    assert "30 frames" in _wait_text(page, "#vps-status", "frames")
    page.click("#vps-run")
    assert "30 frames" in _wait_text(page, "#vps-progress", "done:")
    page.wait_for_selector("#vps-overlay video", timeout=60_000)
    time.sleep(1)
    _screenshot(page, tmp_path, "app_vps_result.png")
    (tmp_path / "overlay.mp4").write_bytes(_download(page, "#vps-files", ".mp4"))
    assert count_frames(tmp_path / "overlay.mp4") == 30
    names = zipfile.ZipFile(io.BytesIO(_download(page, "#vps-files", ".zip"))).namelist()
    assert sorted(n for n in names if n.endswith(".png")) == [f"panoptic/{i:05d}.png" for i in range(30)]
    assert sorted(n for n in names if n.endswith(".json")) == [f"segments/{i:05d}.json" for i in range(30)]
    assert "stuff" in page.inner_text("#vps-legend")
    assert page.external == []
