"""The operators' web page on a running daemon, in a real headless browser (Debian's chromium).

`sarde run` reads two real CCTV clips in a loop (fi005: the default model raises `fighting` on it,
see test_snapshots; nofi005: an ordinary street scene). The page must show both cameras with their
live overlay stream and health, the recent events with their snapshot and clip, and filter them by
camera and label; the screenshot must show the live pictures and the snapshots painted.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _status(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait(what: str, check, timeout_s: float, proc=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        try:
            got = check()
        except (OSError, ValueError):
            got = None
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture()
def daemon(daemon_config, tmp_path, free_port):
    """A running `sarde run` with the web page on; yields (base URL, metrics URL, media dir)."""
    web_port, metrics_port = free_port(), free_port()
    media = tmp_path / "media"
    cfg = daemon_config(metrics=f"{{port: {metrics_port}}}", extra=(
        f"media: {{snapshot_dir: '{media}', clip_post_s: 1.0}}\n"
        f"web: {{enabled: true, port: {web_port}, stream_fps: 10}}\n"
        "sources:\n"
        "  - {name: fight, url: videos/fightsurv_dev/fight/fi005.mp4, loop: true}\n"
        "  - {name: street, url: videos/fightsurv_dev/noFight/nofi005.mp4, loop: true}\n"))
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg), "--no-progress"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{web_port}"
    try:
        yield base, f"http://127.0.0.1:{metrics_port}/metrics", media, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    assert proc.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]


def test_api_and_media_routes_of_a_running_daemon(daemon):
    base, metrics, media, proc = daemon
    cams = _wait("both cameras up", lambda: (c := json.loads(_get(f"{base}/api/cameras")[2])["cameras"])
                 and all(c.get(k, {}).get("up") for k in ("fight", "street")) and c, 120, proc)
    assert set(cams) == {"fight", "street"}
    # "up" counts frames received; the live view shows them once detected and tracked
    status, ctype, jpg = _wait("the first live frame", lambda: _get(f"{base}/cameras/fight/latest.jpg"), 60, proc)
    import cv2

    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and ctype == "image/jpeg" and img.shape == (368, 432, 3) and img.std() > 20
    # an event with its snapshot and its clip, both served
    row = _wait("a fighting start with its snapshot and clip written", lambda: next(
        (e for e in json.loads(_get(f"{base}/api/events?camera=fight&label=fighting&phase=start")[2])
         if e["snapshot_url"] and e["clip_url"]), None), 120, proc)
    assert row["schema"] == "sarde.event/3" and row["label"] == "fighting" and row["camera"] == "fight"
    status, ctype, data = _get(base + row["snapshot_url"])
    assert status == 200 and ctype == "image/jpeg" and data == Path(row["snapshot"]).read_bytes()
    status, ctype, data = _get(base + row["clip_url"])
    assert status == 200 and ctype == "video/mp4" and len(data) > 10_000
    # nothing outside the media folder, no other file kinds, unknown cameras, bad filters
    assert _status(f"{base}/media/..%2f..%2fcfg.yaml") == 404
    assert _status(f"{base}/media/%2e%2e/%2e%2e/etc/passwd") == 404
    assert _status(f"{base}/cameras/nope/live.mjpeg") == 404
    assert _status(f"{base}/api/events?phase=sideways") == 400
    # the MJPEG stream: consecutive JPEG parts
    with urllib.request.urlopen(f"{base}/cameras/street/live.mjpeg", timeout=10) as r:
        assert r.headers.get("Content-Type").startswith("multipart/x-mixed-replace")
        body = b""
        while body.count(b"--frame") < 3:
            body += r.read1(65536)
    parts = [p for p in body.split(b"--frame")[1:3]]
    for p in parts:
        jpeg = p.split(b"\r\n\r\n", 1)[1]
        assert cv2.imdecode(np.frombuffer(jpeg.rstrip(b"\r\n"), np.uint8), cv2.IMREAD_COLOR).shape == (368, 432, 3)
    # the page's reload button: a config reload, applied
    assert _status(f"{base}/api/reload", "POST") == 202
    _wait("the reload applied", lambda: 'sarde_config_reloads_total{result="applied"} 1.0' in _get(metrics)[2].decode(), 30, proc)


@pytest.mark.skipif((CHROMIUM is None or CHROMEDRIVER is None) and os.environ.get("SARDE_REQUIRE_RTSP") != "1",
                    reason="chromium / chromedriver not installed (Debian: chromium chromium-driver; .ci/install-rtsp.sh)")
def test_page_in_a_headless_browser(daemon, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, _, _, proc = daemon
    _wait("a fighting event with snapshot and clip", lambda: any(
        e["snapshot_url"] and e["clip_url"] for e in json.loads(_get(f"{base}/api/events?label=fighting&phase=start")[2])),
        120, proc)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        driver.get(base + "/")
        wait = WebDriverWait(driver, 30)
        cams = driver.find_elements(By.CSS_SELECTOR, ".camera")
        assert sorted(c.get_attribute("data-camera") for c in cams) == ["fight", "street"]
        for cam in ("fight", "street"):  # the live stream delivered pictures, the health badge says up
            wait.until(lambda d: d.execute_script(
                f"return document.querySelector('#camera-{cam} img.live').naturalWidth") == 432)
            assert driver.find_element(By.CSS_SELECTOR, f'[data-health="{cam}"]').text == "up"
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.event")
        assert rows and all(r.get_attribute("data-phase") == "start" for r in rows)  # one row per action by default
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('img.snapshot')].some(i => i.complete && i.naturalWidth === 432)"))
        assert driver.find_elements(By.CSS_SELECTOR, "a.clip")
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        rects = {c: driver.find_element(By.CSS_SELECTOR, f"#camera-{c} img.live").rect for c in ("fight", "street")}
        snap = driver.find_element(By.CSS_SELECTOR, "img.snapshot").rect
        ratio = driver.execute_script("return window.devicePixelRatio")

        # filters: camera and label
        Select(driver.find_element(By.NAME, "camera")).select_by_value("fight")
        Select(driver.find_element(By.NAME, "label")).select_by_value("fighting")
        driver.find_element(By.CSS_SELECTOR, "#filters button").click()
        wait.until(lambda d: "camera=fight" in d.current_url)
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.event")
        assert rows and all((r.get_attribute("data-camera"), r.get_attribute("data-label")) == ("fight", "fighting")
                            for r in rows)
        Select(driver.find_element(By.NAME, "camera")).select_by_value("street")
        driver.find_element(By.CSS_SELECTOR, "#filters button").click()
        wait.until(lambda d: "camera=street" in d.current_url)
        assert all(r.get_attribute("data-camera") == "street" for r in driver.find_elements(By.CSS_SELECTOR, "tr.event"))
    finally:
        driver.quit()

    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[1] == round(1280 * ratio)

    def crop(r):
        x, y, w, h = (int(round(r[k] * ratio)) for k in ("x", "y", "width", "height"))
        return img[y:y + h, x:x + w]

    for cam, r in rects.items():  # a camera picture, not an empty box
        area = crop(r)
        assert area.shape[0] > 300 and area.std() > 20, cam
    assert crop(snap).std() > 20  # the snapshot thumbnail is painted
    print(f"screenshot: {shot}")
