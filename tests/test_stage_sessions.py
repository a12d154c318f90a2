"""Reader sessions and the part-count bound at a real stage over real ZeroMQ sockets (no CURVE):
another sender cannot jump, reset or end a camera it does not own; an owner silent past the
takeover timeout is replaced; a camera pinned by ``sarde run`` never is; a 50-part message is
rejected as ``parts`` and the stage goes on."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import zmq

from engines.detector import PoseDetector
from pipeline.metrics import Health, StageMetrics
from pipeline.stage import Stage, StageSettings
from pipeline.wire import FrameHeader, encode_frame, encode_status, new_session


@pytest.fixture(scope="module")
def detector(detector_onnx):
    return PoseDetector(detector_onnx, providers=["cpu"])


class Rig:
    """A stage (record-only, camera ``cam``) on an ipc PULL, and PUSH sockets for senders."""

    def __init__(self, tmp_path, detector, **settings):
        self.ctx = zmq.Context()
        self.endpoint = f"ipc://{tmp_path}/frames.sock"
        pull = self.ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(self.endpoint)
        self.socks = [pull]
        self.metrics = StageMetrics()
        self.stage = Stage(StageSettings(cameras=["cam"], detector_max_batch=4, **settings), pull, detector, None, None,
                           lambda e: None, self.metrics, Health(self.metrics, ["cam"], 60.0))
        w, h = self.stage.input_size
        self.image = np.zeros((h, w, 3), np.uint8)  # (H, W, 3) detector input: no persons, frames still counted

    def sender(self) -> zmq.Socket:
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self.endpoint)
        self.socks.append(push)
        return push

    def frame(self, sock: zmq.Socket, session: str, seq: int) -> None:
        w, h = self.stage.input_size
        header = FrameHeader(kind="frame", camera="cam", seq=seq, capture_ts=time.time(), shape=self.image.shape,
                             orig_size=(w, h), scale=1.0, pad=(0, 0), session=session)
        sock.send_multipart(encode_frame(header, self.image), copy=False)

    def eos(self, sock: zmq.Socket, session: str, seq: int) -> None:
        sock.send_multipart(encode_status(FrameHeader(kind="eos", camera="cam", seq=seq, capture_ts=time.time(),
                                                      session=session)))

    def rejected(self, reason: str) -> float:
        return self.metrics.registry.get_sample_value("sarde_messages_rejected_total", {"reason": reason}) or 0.0

    def processed(self) -> float:
        return self.metrics.registry.get_sample_value("sarde_frames_processed_total", {"camera": "cam"}) or 0.0

    def until(self, done, timeout_s: float = 60.0) -> None:
        deadline = time.time() + timeout_s
        while not done():
            assert time.time() < deadline, "the stage did not get there in time"
            self.stage.step(50)

    def close(self) -> None:
        for sock in self.socks:
            sock.close(0)
        self.ctx.term()


@pytest.fixture()
def rig(tmp_path, detector):
    made: list[Rig] = []

    def make(**settings) -> Rig:
        made.append(Rig(tmp_path, detector, **settings))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_another_session_cannot_jump_reset_or_end_a_camera(rig, caplog):
    r = rig(session_takeover_s=30.0)
    genuine, mallory = r.sender(), r.sender()
    ours, theirs = new_session(), new_session()
    for seq in range(5):
        r.frame(genuine, ours, seq)
    r.until(lambda: r.processed() == 5)
    cam = r.stage.cameras["cam"]
    assert cam.session == ours
    with caplog.at_level(logging.INFO):
        r.frame(mallory, theirs, 2**62)  # a sequence jump: the genuine frames would be rejected as `seq`
        r.frame(mallory, theirs, 0)  # a reset: the camera's tracks would be closed
        r.eos(mallory, theirs, 2**62)  # an end of stream: the genuine frames would be rejected as `after_eos`
        r.until(lambda: r.rejected("peer") == 3)
        for seq in range(5, 10):
            r.frame(genuine, ours, seq)
        r.until(lambda: r.processed() == 10)
    assert r.stage.cameras["cam"] is cam and not cam.ended and cam.last_seq == 9  # never reset, never ended
    assert (r.rejected("peer"), r.rejected("seq"), r.rejected("after_eos")) == (3, 0, 0)
    assert r.metrics.registry.get_sample_value("sarde_frames_dropped_total", {"camera": "cam", "stage": "stage"}) == 3
    assert ours not in caplog.text and theirs not in caplog.text  # a token is never logged
    r.eos(genuine, ours, 10)
    r.until(lambda: cam.ended)


def test_a_silent_owner_is_taken_over_after_the_timeout(rig, caplog):
    r = rig(session_takeover_s=0.5)
    first, second = r.sender(), r.sender()
    old_session, new = new_session(), new_session()
    for seq in range(3):
        r.frame(first, old_session, seq)
    r.until(lambda: r.processed() == 3)
    old = r.stage.cameras["cam"]
    r.frame(second, new, 100)  # the owner spoke a moment ago: refused
    r.until(lambda: r.rejected("peer") == 1)
    time.sleep(0.8)  # the owner is now silent past the timeout (a reader restarted by hand)
    with caplog.at_level(logging.WARNING):
        r.frame(second, new, 0)
        r.until(lambda: r.processed() == 4)
    cam = r.stage.cameras["cam"]
    assert cam is not old and cam.session == new and cam.last_seq == 0 and old.ended  # afresh, old tracks closed
    assert "takes over" in caplog.text and "silent for" in caplog.text
    r.frame(first, old_session, 3)  # now the old session is the stranger
    r.frame(second, new, 1)
    r.until(lambda: r.processed() == 5 and r.rejected("peer") == 2)
    assert r.stage.cameras["cam"] is cam and cam.last_seq == 1


def test_a_camera_pinned_by_sarde_run_accepts_its_session_only(rig):
    ours, theirs = new_session(), new_session()
    r = rig(sessions={"cam": ours}, session_takeover_s=0.2)
    genuine, mallory = r.sender(), r.sender()
    r.frame(mallory, theirs, 0)  # before the reader's first message: no first-come window
    r.until(lambda: r.rejected("peer") == 1)
    assert r.stage.cameras["cam"].session == ours and r.stage.cameras["cam"].last_seq == -1
    r.frame(genuine, ours, 0)
    r.until(lambda: r.processed() == 1)
    time.sleep(0.4)  # silent past the timeout: a pinned camera is still not taken over
    r.frame(mallory, theirs, 1)
    r.until(lambda: r.rejected("peer") == 2)
    cam = r.stage.cameras["cam"]
    r.frame(genuine, ours, 0)  # the same token from a restarted reader: a restart, as before
    r.until(lambda: r.processed() == 2)
    assert r.stage.cameras["cam"] is not cam and r.stage.cameras["cam"].session == ours


def test_a_message_of_many_parts_is_rejected_and_the_stage_goes_on(rig):
    r = rig()
    push = r.sender()
    session = new_session()
    r.frame(push, session, 0)
    push.send_multipart([b"x"] * 50)
    push.send_multipart([b"{}", b"x", b"y"])
    r.until(lambda: r.rejected("parts") == 2)
    r.frame(push, session, 1)
    r.until(lambda: r.processed() == 2)
    assert r.rejected("parts") == 2 and r.stage.cameras["cam"].last_seq == 1
