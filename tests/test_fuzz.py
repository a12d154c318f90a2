"""Fuzzing the wire boundary: property-based (Hypothesis) on the decoder, and 10,000 malformed
messages against a real stage over loopback, interleaved with real frames (issue 9).

The stage test keeps only messages the decoder rejects, so every count is exact: the stage stays
alive, every valid frame is processed, the rejections add up by reason to what was sent, and the
stage's RSS grows by less than 5 %.
"""
from __future__ import annotations

import collections
import json
import random
import threading
import time

import cv2
import numpy as np
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.detector import PoseDetector
from engines.letterbox import letterbox
from pipeline.metrics import Health, StageMetrics
from pipeline.stage import Stage, StageSettings
from pipeline.wire import MAX_HEADER_BYTES, REASONS, FrameHeader, WireError, decode, encode_frame

N_MALFORMED = 10_000
N_VALID = 24
N_WARM = 12  # warm-up frames (every detector batch size is seen before the RSS baseline)
FIELDS = ("v", "kind", "session", "camera", "seq", "capture_ts", "shape", "dtype", "orig_size", "scale", "pad",
          "source_fps", "dropped", "reconnects", "source_up")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10)


def _valid_header(image: np.ndarray, seq: int = 1, camera: str = "fuzz") -> dict:
    return json.loads(encode_frame(FrameHeader(kind="frame", camera=camera, seq=seq, capture_ts=time.time(),
                                               shape=image.shape, orig_size=(768, 576), scale=0.5625, pad=(0, 22)),
                                   image)[0])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS + ("extra",)), value=json_values, drop=st.booleans(),
       pixels=st.binary(max_size=64) | st.none())
def test_decoder_never_fails_other_than_wire_error(field, value, drop, pixels):
    """Any change of one header field (or its removal), with any pixel part, is either a valid
    message whose header meets every bound or a WireError with a known reason: no other exception."""
    image = np.zeros((4, 6, 3), np.uint8)
    obj = _valid_header(image)
    if drop and field in obj:
        del obj[field]
    else:
        obj[field] = value
    parts = [json.dumps(obj).encode()] + ([] if pixels is None else [pixels])
    try:
        header, img = decode(parts)
    except WireError as exc:
        assert exc.reason in REASONS
        return
    assert 0 <= header.seq < 2**63 and header.dropped < 2**63 and header.reconnects < 2**63
    if header.kind == "frame":
        assert img is not None and img.shape == tuple(header.shape) and header.orig_size is not None
    else:
        assert img is None


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=MAX_HEADER_BYTES + 16))
def test_decoder_on_random_bytes(raw):
    with pytest.raises(WireError):
        decode([raw, b""])


def _malformed_corpus(image: np.ndarray, n: int, seed: int = 7) -> list[list[bytes]]:
    """``n`` messages the decoder rejects: the fixed cases of issue 9 plus seeded random mutations."""
    rng = random.Random(seed)
    good = _valid_header(image)
    pixels = image.tobytes()
    fixed = [
        [b"[" * 1000 + b"]" * 1000],
        [json.dumps({**good, "kind": "status", "shape": None, "dropped": 10**400}).encode()],
        [json.dumps({**good, "kind": "status", "shape": None, "reconnects": 10**400}).encode()],
        [json.dumps({**good, "seq": 2**63}).encode(), pixels],
        [json.dumps({**good, "capture_ts": 10**400}).encode(), pixels],
    ]
    bad_values = [None, -1, 2**63, 10**400, -(10**400), "x" * 70, "", [], [[[]]], {}, True, False, 0.0, -0.5,
                  [1, 2, 3], [0, 0], [-1, 5], [4096 * 4, 3], "NaN", 1e308, [1e9, 1e9], "uint16", "frame", 7]
    corpus, attempts = [], 0
    while len(corpus) < n:
        attempts += 1
        kind = rng.random()
        if kind < 0.06 and fixed:
            msg = fixed[len(corpus) % len(fixed)]
        elif kind < 0.12:
            msg = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))), pixels]
        elif kind < 0.18:
            obj = dict(good)
            del obj[rng.choice(FIELDS)]
            msg = [json.dumps(obj).encode(), pixels]
        elif kind < 0.22:
            msg = [json.dumps({**good, rng.choice(["x", "camera_id", "token"]): 1}).encode(), pixels]
        elif kind < 0.26:
            msg = [json.dumps(good).encode(), pixels[: rng.randint(0, len(pixels) - 1)]]
        elif kind < 0.28:
            msg = [json.dumps(good).encode(), pixels] + [b"extra"] * rng.randint(1, 40)
        elif kind < 0.30:
            msg = [b" " * (MAX_HEADER_BYTES + 1) + json.dumps(good).encode(), pixels]
        else:
            obj = dict(good)
            for _ in range(rng.randint(1, 3)):
                obj[rng.choice(FIELDS)] = rng.choice(bad_values)
            text = json.dumps(obj).replace('"NaN"', "NaN") if rng.random() < 0.1 else json.dumps(obj)
            msg = [text.encode(), pixels] if rng.random() < 0.8 else [text.encode()]
        try:
            decode(msg)
        except WireError:
            corpus.append(msg)
        assert attempts < 20 * n
    return corpus


def test_ten_thousand_malformed_messages_against_a_real_stage(tmp_path, detector_onnx, shared_dir):
    detector = PoseDetector(detector_onnx, providers=["cpu"])
    cap = cv2.VideoCapture(str(shared_dir / "data" / "videos" / "vtest" / "vtest.avi"))
    frames = []
    while len(frames) < N_WARM + N_VALID:
        ok, frame = cap.read()
        assert ok
        frames.append(letterbox(frame, detector.input_size)[0])
    cap.release()
    corpus = _malformed_corpus(frames[0], N_MALFORMED)
    expected = collections.Counter()
    for msg in corpus:
        try:
            decode(msg)
        except WireError as exc:
            expected[exc.reason] += 1
    assert sum(expected.values()) == N_MALFORMED

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 8)  # the deployed high-water marks: memory is bounded by them, not by the sender
    pull.bind(f"ipc://{tmp_path}/frames.sock")
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 4)
    push.connect(f"ipc://{tmp_path}/frames.sock")
    metrics = StageMetrics()
    stage = Stage(StageSettings(cameras=["fuzz"], detector_max_batch=4), pull, detector, None, None, lambda e: None,
                  metrics, Health(metrics, ["fuzz"], 60.0))

    def valid(seq: int) -> list:
        img = frames[seq]
        return [json.dumps(_valid_header(img, seq)).encode(), img.tobytes()]

    def counted() -> tuple[float, float]:
        processed = metrics.registry.get_sample_value("sarde_frames_processed_total", {"camera": "fuzz"}) or 0.0
        rejected = sum(metrics.registry.get_sample_value("sarde_messages_rejected_total", {"reason": r}) or 0.0
                       for r in REASONS)
        return processed, rejected

    try:
        for seq in range(N_WARM):  # warm-up: onnxruntime arenas for each batch size, the camera state
            push.send_multipart(valid(seq))
        while counted()[0] < N_WARM:
            stage.step(200)
        rss0 = psutil.Process().memory_info().rss
        stride = N_MALFORMED // N_VALID

        def send():
            for i, msg in enumerate(corpus):
                push.send_multipart(msg)
                if i % stride == 0 and i // stride < N_VALID:
                    push.send_multipart(valid(N_WARM + i // stride))

        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.time() + 240
        while time.time() < deadline and counted() != (N_WARM + N_VALID, N_MALFORMED):
            stage.step(100)
        sender.join()
        rss1 = psutil.Process().memory_info().rss
        processed, rejected = counted()
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()
    assert processed == N_WARM + N_VALID  # every valid frame, none lost among the malformed ones
    assert rejected == N_MALFORMED
    for reason, n in expected.items():
        assert metrics.registry.get_sample_value("sarde_messages_rejected_total", {"reason": reason}) == n, reason
    print(f"stage RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB; rejected by reason {dict(sorted(expected.items()))}")
    assert rss1 < 1.05 * rss0, (rss0, rss1)
