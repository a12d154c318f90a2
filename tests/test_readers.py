"""Readers (pipeline.readers) on real clips from ../shared/data/videos over real ZeroMQ sockets, and
on a real RTSP server (tests/rtsp_server.py, gst-rtsp-server under Debian's /usr/bin/python3)."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from engines.letterbox import letterbox
from pipeline.readers import EXIT_NO_SOURCE, EXIT_OK, EXIT_TRANSPORT, ReaderSettings, reader_main, run_reader
from pipeline.sources import infer_kind, mask_url
from pipeline.wire import decode

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SARDE_SHARED", REPO.parent / "shared"))
VIDEOS = SHARED / "data" / "videos"
SYSTEM_PYTHON = "/usr/bin/python3"
INPUT = (432, 368)  # detector input (W, H)


def clip(rel: str) -> Path:
    path = VIDEOS / rel
    if not path.is_file():
        pytest.skip(f"shared clip {path} not found (set SARDE_SHARED)")
    return path


def decode_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture()
def pull():
    """A bound PULL socket (the stage's side) on tcp loopback; yields (socket, endpoint)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(linger=0)
    ctx.term()


class ThreadedReader:
    """run_reader in a thread of this process (same code path as the process entry, faster to start)."""

    def __init__(self, settings: ReaderSettings):
        self.stop = threading.Event()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(settings,), name=f"test-reader-{settings.camera}", daemon=True)
        self.thread.start()

    def _run(self, settings):
        self.code = run_reader(settings, self.stop)

    def finish(self, timeout: float = 10.0) -> int | None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "reader did not stop"
        return self.code


def recv(sock, timeout_s: float):
    if not sock.poll(int(timeout_s * 1000)):
        return None
    return decode(sock.recv_multipart(copy=False))


# ------------------------------------------------------------------------------------------ unit
def test_mask_url_hides_credentials():
    assert mask_url("rtsp://admin:s3cr3t@10.0.0.5:554/Streaming/101") == "rtsp://admin:***@10.0.0.5:554/Streaming/101"
    assert mask_url("rtsp://u:p@ss:w@rd@cam/x") == "rtsp://u:***@cam/x"
    assert mask_url("rtsp://tokenonly@cam/x") == "rtsp://***@cam/x"
    assert mask_url("http://cam/snap?user=a&password=hunter2&x=1") == "http://cam/snap?user=a&password=***&x=1"
    assert mask_url("rtsp://cam:554/live") == "rtsp://cam:554/live"
    assert mask_url("/videos/a.mp4") == "/videos/a.mp4" and mask_url(0) == "0"


def test_infer_kind_and_settings_validation(tmp_path):
    assert infer_kind("rtsp://x/y") == "rtsp" and infer_kind("RTSPS://x/y") == "rtsp"
    assert infer_kind("/dev/video2") == "device" and infer_kind(0) == "device" and infer_kind("1") == "device"
    assert infer_kind("clip.mp4") == "file" and infer_kind("file:///tmp/a.mp4") == "file"
    s = ReaderSettings(camera="c", url="a.mp4", endpoint="ipc:///x")
    assert s.is_lossless and s.source_kind == "file"
    assert not ReaderSettings(camera="c", url="rtsp://h/p", endpoint="ipc:///x").is_lossless
    assert not ReaderSettings(camera="c", url="a.mp4", endpoint="ipc:///x", lossless=False).is_lossless
    for bad in (dict(camera="bad name"), dict(kind="usb"), dict(input_size=(432,)), dict(max_fps=0),
                dict(backoff_initial_s=5, backoff_max_s=1), dict(rtsp_transport="http")):
        with pytest.raises(ValueError):
            ReaderSettings(**{**dict(camera="c", url="a.mp4", endpoint="ipc:///x"), **bad})


def test_missing_or_broken_file_exits_2(tmp_path, pull, caplog):
    _, endpoint = pull
    not_video = tmp_path / "notes.avi"
    not_video.write_bytes(b"this is not a video file\n" * 100)
    for url in (tmp_path / "missing.mp4", not_video):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="pipeline.readers"):
            code = run_reader(ReaderSettings(camera="c1", url=str(url), endpoint=endpoint), threading.Event())
        assert code == EXIT_NO_SOURCE == 2
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and str(url) in errors[0], errors


def test_bad_endpoint_exits_3():
    code = run_reader(ReaderSettings(camera="c1", url=str(clip("stgcn/ta_chi.mp4")), endpoint="carrier-pigeon://x"),
                      threading.Event())
    assert code == EXIT_TRANSPORT == 3


# ------------------------------------------------------------------------------------------ files
def test_file_lossless_delivers_every_frame_then_eos(pull):
    """Lossless file mode under back-pressure (consumer pauses, HWM 1): every frame arrives, in
    order, letterboxed exactly, with consistent media timestamps, then eos; exit code 0."""
    sock, endpoint = pull
    path = clip("stgcn/ta_chi.mp4")
    reference = decode_all(path)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    n_meta, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert len(reference) == n_meta == 300

    reader = ThreadedReader(ReaderSettings(camera="tai-chi", url=str(path), endpoint=endpoint, input_size=INPUT, sndhwm=1))
    t0 = time.monotonic()
    headers = []
    time.sleep(0.5)  # consumer stalls: a lossless reader must wait, not drop
    while True:
        got = recv(sock, 10.0)
        assert got is not None, f"timed out after {len(headers)} frames"
        header, image = got
        if header.kind == "eos":
            break
        assert header.kind == "frame" and image.shape == (INPUT[1], INPUT[0], 3)
        if header.seq in (0, 150, 299):
            expected, _, _ = letterbox(reference[header.seq], INPUT)
            assert np.array_equal(image, expected), f"frame {header.seq} differs from the decoded clip"
        headers.append(header)
    elapsed = time.monotonic() - t0
    reader.thread.join(10)
    assert reader.code == EXIT_OK

    assert [h.seq for h in headers] == list(range(len(reference)))
    assert header.seq == len(reference) and not header.source_up  # eos: frames captured so far
    assert all(h.dropped == 0 and h.reconnects == 0 and h.source_up for h in headers)
    assert {tuple(h.orig_size) for h in headers} == {(340, 256)}
    assert all(h.source_fps == pytest.approx(fps) for h in headers)
    ts = np.array([h.capture_ts for h in headers])
    np.testing.assert_allclose(np.diff(ts), 1.0 / fps, atol=2e-3)  # media time on the start wall time
    assert abs(ts[0] - time.time()) < 60
    print(f"\nlossless file: {len(headers)} frames in {elapsed:.2f} s (incl. 0.5 s consumer stall)")


def test_file_lossless_decimation_and_loop(pull):
    """max_fps decimates by timestamp; loop restarts the clip with time continuing."""
    sock, endpoint = pull
    path = clip("openpose/street.avi")  # 50 fps, 205 frames
    reader = ThreadedReader(ReaderSettings(camera="street", url=str(path), endpoint=endpoint, input_size=(216, 184),
                                           loop=True, max_fps=10.0))
    headers = []
    while len(headers) < 60:  # 205 frames / 5 per 10 fps ~ 41 frames a pass: crosses the loop point
        got = recv(sock, 10.0)
        assert got is not None
        headers.append(got[0])
    assert reader.finish() == EXIT_OK
    assert [h.seq for h in headers] == list(range(60))
    dts = np.diff([h.capture_ts for h in headers])
    assert np.all(dts > 0)
    np.testing.assert_allclose(np.median(dts), 0.1, atol=1e-3)
    assert dts.max() < 0.15  # no jump or gap at the loop point


def test_live_file_slow_consumer_drops_and_counts():
    """A looping file in live mode (lossless=False) is played at its frame rate like a camera. A
    consumer 4x too slow gets the newest frames; the rest is dropped and counted, exactly; the
    capture keeps real time (the source is never stalled)."""
    path = clip("stgcn/ta_chi.mp4")  # 29.97 fps
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 64 * 1024)
    endpoint = f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}"
    try:
        reader = ThreadedReader(ReaderSettings(camera="live", url=str(path), endpoint=endpoint, lossless=False,
                                               loop=True, sndhwm=1, input_size=INPUT))
        first = recv(sock, 5.0)
        assert first is not None
        t0 = time.monotonic()
        received = [first[0]]
        ages = []
        while time.monotonic() - t0 < 3.0:
            got = recv(sock, 2.0)
            assert got is not None, "reader stalled"
            ages.append(time.time() - got[0].capture_ts)
            received.append(got[0])
            time.sleep(0.12)  # consumer: ~7 frames/s against a 30 frames/s source
        elapsed = time.monotonic() - t0
        assert reader.finish() == EXIT_OK
    finally:
        sock.close(linger=0)
        ctx.term()
    frames = [h for h in received if h.kind == "frame"]
    a, b = frames[0], frames[-1]
    seqs = [h.seq for h in frames]
    assert seqs == sorted(set(seqs))
    # the capture kept the source's real time while the consumer was slow
    span = b.capture_ts - a.capture_ts
    assert span > elapsed - 1.0, f"capture fell behind: {span:.2f} s of video in {elapsed:.2f} s"
    assert (b.seq - a.seq) / span == pytest.approx(29.97, rel=0.1)
    assert len(frames) < 0.5 * (b.seq - a.seq)
    # every frame not delivered between a and b is counted as dropped, no more, no less
    assert b.dropped - a.dropped == (b.seq - a.seq + 1) - len(frames)
    assert b.dropped > 0 and all(h.source_up for h in frames)
    late = np.median(ages[len(ages) // 2:])
    assert late < 0.8, f"stale frames delivered (median age {late:.2f} s): queues are not bounded"
    print(f"\nlive file: {b.seq - a.seq + 1} captured, {len(frames)} delivered, {b.dropped - a.dropped} dropped, "
          f"median frame age {1000 * late:.0f} ms at a consumer 4x slower than the source")


def test_missing_device_reports_down_and_retries(pull):
    """A live source that cannot be opened: status messages with source_up false, reconnect attempts
    counted, with backoff; stop ends the reader promptly."""
    sock, endpoint = pull
    reader = ThreadedReader(ReaderSettings(camera="usb0", url="/dev/video99", endpoint=endpoint, open_timeout_ms=500,
                                           backoff_initial_s=0.1, backoff_max_s=0.2, status_interval_s=0.2))
    statuses = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        got = recv(sock, 1.0)
        assert got is not None, "no status while the device is down"
        assert got[0].kind == "status" and got[1] is None
        statuses.append(got[0])
    t = time.monotonic()
    assert reader.finish() == EXIT_OK and time.monotonic() - t < 2.0
    assert len(statuses) >= 4 and not any(h.source_up for h in statuses)
    assert statuses[-1].reconnects >= 4 and statuses[-1].reconnects >= statuses[0].reconnects
    assert all(h.seq == 0 and h.camera == "usb0" for h in statuses)


def test_live_file_plays_in_real_time_then_eos(pull):
    """A non-looping file in live mode is paced to its frame rate and ends with eos, exit 0."""
    sock, endpoint = pull
    path = clip("pyskl/ntu_hug.avi")  # 1920x1080, 30 fps, 72 frames = 2.4 s
    reader = ThreadedReader(ReaderSettings(camera="hug", url=str(path), endpoint=endpoint, lossless=False, input_size=INPUT))
    t0 = time.monotonic()
    frames = []
    while True:
        got = recv(sock, 5.0)
        assert got is not None
        if got[0].kind == "eos":
            break
        if got[0].kind == "frame":
            frames.append(got[0])
    elapsed = time.monotonic() - t0
    reader.thread.join(5)
    assert reader.code == EXIT_OK
    assert 2.0 < elapsed < 4.0, f"72 frames at 30 fps took {elapsed:.2f} s"
    eos = got[0]
    assert eos.seq == 72 and eos.dropped == 72 - len(frames) and len(frames) >= 36
    assert tuple(frames[0].orig_size) == (1920, 1080)


def test_lossless_reader_stops_while_blocked():
    """Lossless mode waits for the stage, but stop still ends it promptly (no stage bound at all)."""
    reader = ThreadedReader(ReaderSettings(camera="c", url=str(clip("stgcn/ta_chi.mp4")),
                                           endpoint="tcp://127.0.0.1:9"))  # nothing listens there
    time.sleep(0.5)
    t = time.monotonic()
    assert reader.finish(5.0) == EXIT_OK
    assert time.monotonic() - t < 1.0


def test_reader_main_in_spawned_process(tmp_path, pull):
    """reader_main as a multiprocessing (spawn) target: SIGTERM -> exit 0; missing file -> exit 2."""
    sock, endpoint = pull
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=reader_main, name="sarde-reader-usb7", args=(ReaderSettings(
        camera="usb7", url="/dev/video97", endpoint=endpoint, backoff_initial_s=0.1, backoff_max_s=0.1,
        status_interval_s=0.1),))
    missing = ctx.Process(target=reader_main, name="sarde-reader-gone", args=(ReaderSettings(
        camera="gone", url=str(tmp_path / "gone.mp4"), endpoint=endpoint),))
    proc.start()
    missing.start()
    try:
        got = recv(sock, 20.0)
        assert got is not None and got[0].camera == "usb7" and got[0].kind == "status" and not got[0].source_up
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(5)
        missing.join(20)
        assert proc.exitcode == EXIT_OK
        assert missing.exitcode == EXIT_NO_SOURCE
    finally:
        for p in (proc, missing):
            if p.is_alive():
                p.kill()
                p.join()


# ------------------------------------------------------------------------------------------ RTSP
def _rtsp_available() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer','1.0')"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return "gst-rtsp-server Python bindings missing (run .ci/install-rtsp.sh): " + probe.stderr.strip()[-200:]
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    def __init__(self, path: Path, port: int, user: str, password: str):
        self.args = [SYSTEM_PYTHON, str(REPO / "tests" / "rtsp_server.py"), "--clip", str(path), "--port", str(port),
                     "--mount", "/cam", "--user", user, "--password", password]
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # "READY rtsp://..."
        assert line.startswith("READY"), f"rtsp server did not start: {line!r}"
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _reader_process(settings: ReaderSettings, log_path: Path) -> subprocess.Popen:
    """The reader as its own process (like the daemon's), stderr (Python and FFmpeg logs) to a file."""
    code = ("import json, sys; from pipeline.readers import ReaderSettings, reader_main; "
            "reader_main(ReaderSettings(**json.loads(sys.stdin.readline())))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=open(log_path, "wb"), env=env, cwd=REPO, text=True)
    proc.stdin.write(json.dumps(asdict(settings)) + "\n")
    proc.stdin.close()
    return proc


def _next_frame(sock, timeout_s: float, statuses: list | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = recv(sock, max(0.0, deadline - time.monotonic()))
        if got is None:
            break
        if got[0].kind == "frame":
            return got
        if statuses is not None:
            statuses.append(got[0])
    return None


def test_rtsp_reader_reconnects_and_masks_password(tmp_path, pull):
    reason = _rtsp_available()
    if reason:
        pytest.skip(reason)
    sock, endpoint = pull
    path = clip("stgcn/ta_chi.mp4")
    port = _free_port()
    password = "s3cr3t-Pa55"
    server = RtspServer(path, port, "viewer", password)
    log_ok, log_bad = tmp_path / "reader.log", tmp_path / "reader_badpw.log"
    readers = []
    try:
        server_ready = server.start()
        common = dict(endpoint=endpoint, input_size=INPUT, open_timeout_ms=2000, read_timeout_ms=1000,
                      backoff_initial_s=0.2, backoff_max_s=0.5, status_interval_s=0.2)
        t0 = time.monotonic()
        readers.append(_reader_process(ReaderSettings(
            camera="ipcam", url=f"rtsp://viewer:{password}@127.0.0.1:{port}/cam", **common), log_ok))
        # a second camera with a wrong password: down, and its password never logged either
        readers.append(_reader_process(ReaderSettings(
            camera="ipcam-badpw", url=f"rtsp://viewer:hunter2-wrong@127.0.0.1:{port}/cam", **common), log_bad))

        frames, statuses = [], []
        got = _next_frame(sock, 15.0, statuses)
        assert got is not None, "no RTSP frame; reader log:\n" + log_ok.read_text()[-2000:]
        first_latency = time.monotonic() - t0
        frames.append(got[0])
        assert got[1].shape == (INPUT[1], INPUT[0], 3) and got[0].camera == "ipcam"
        assert tuple(got[0].orig_size) == (340, 256) and got[0].source_up
        while len(frames) < 20:
            got = _next_frame(sock, 5.0, statuses)
            assert got is not None
            frames.append(got[0])
        assert frames[-1].reconnects == 0

        server.kill()  # server dies: the reader must notice, report down, and retry
        t_kill = time.monotonic()
        down = []
        while time.monotonic() - t_kill < 5.0 and not any(h.camera == "ipcam" and not h.source_up for h in down):
            got = recv(sock, 1.0)
            if got is not None and got[0].kind == "status":
                down.append(got[0])
        assert any(h.camera == "ipcam" and not h.source_up for h in down), "no 'source down' status after the kill"
        detect_down = time.monotonic() - t_kill
        time.sleep(1.0)
        server.start()
        t_restart = time.monotonic()
        while True:
            got = _next_frame(sock, 10.0, statuses)
            assert got is not None, "reader did not recover; log:\n" + log_ok.read_text()[-2000:]
            if got[0].camera == "ipcam":
                break
        recover = time.monotonic() - t_restart
        again = got[0]
        assert again.reconnects >= 1 and again.source_up and again.seq > frames[-1].seq

        # server hangs (SIGSTOP): the bounded read timeout must fire, then the reader recovers (SIGCONT)
        os.kill(server.proc.pid, signal.SIGSTOP)
        t_hang = time.monotonic()
        hung = []
        while time.monotonic() - t_hang < 6.0 and not any(h.camera == "ipcam" and not h.source_up for h in hung):
            got = recv(sock, 1.0)
            if got is not None and got[0].kind == "status":
                hung.append(got[0])
        detect_hang = time.monotonic() - t_hang
        os.kill(server.proc.pid, signal.SIGCONT)
        assert any(h.camera == "ipcam" and not h.source_up for h in hung), "a hung server was not detected"
        assert detect_hang < 1.0 + 0.8, f"read timeout of 1 s took {detect_hang:.2f} s to report"
        while True:
            got = _next_frame(sock, 10.0, statuses)
            assert got is not None, "reader did not recover from the hang; log:\n" + log_ok.read_text()[-2000:]
            if got[0].camera == "ipcam":
                break
        assert got[0].reconnects > again.reconnects and got[0].seq > again.seq

        bad = [h for h in statuses + down + hung if h.camera == "ipcam-badpw"]
        assert bad and not any(h.source_up for h in bad) and max(h.reconnects for h in bad) >= 1
        assert not any(h.camera == "ipcam-badpw" for h in frames)

        for proc in readers:
            proc.send_signal(signal.SIGTERM)
        for proc in readers:
            assert proc.wait(10) == EXIT_OK
    finally:
        for proc in readers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        server.kill()

    text_ok, text_bad = log_ok.read_text(errors="replace"), log_bad.read_text(errors="replace")
    assert f"rtsp://viewer:***@127.0.0.1:{port}/cam" in text_ok and "first frame" in text_ok
    assert "read failed" in text_ok and "read timed out" in text_ok and "cannot open" in text_bad
    assert password not in text_ok + text_bad and "hunter2-wrong" not in text_ok + text_bad
    print(f"\nRTSP: server ready {server_ready:.2f} s; first frame {first_latency:.2f} s after reader process start; "
          f"down reported {detect_down:.2f} s after kill; recovered {recover:.2f} s after restart; "
          f"hang (read timeout 1 s) reported after {detect_hang:.2f} s")
