"""Wire format (pipeline.wire) over real ZeroMQ sockets, and letterbox geometry (engines.letterbox)
on real frames from ../shared/data/videos."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from engines.letterbox import letterbox, letterbox_geometry, letterbox_points, unletterbox
from pipeline.wire import (MAX_HEADER_BYTES, REASONS, WIRE_VERSION, FrameHeader, WireError, decode, encode_frame,
                           encode_status)

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
VIDEOS = SHARED / "data" / "videos"


def first_frame(rel: str) -> np.ndarray:
    path = VIDEOS / rel
    if not path.is_file():
        pytest.skip(f"shared clip {path} not found (set SARDE_SHARED)")
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok, f"cannot decode {path}"
    return frame


def make_header(image: np.ndarray | None = None, **kw) -> FrameHeader:
    base = dict(kind="frame", camera="cam-1", seq=7, capture_ts=1_700_000_000.25,
                shape=None if image is None else image.shape, orig_size=(1280, 720), scale=0.3375, pad=(0, 62),
                source_fps=50.0, dropped=3, reconnects=1, source_up=True)
    base.update(kw)
    return FrameHeader(**base)


@pytest.fixture()
def push_pull():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    yield push, pull
    push.close(linger=0)
    pull.close(linger=0)
    ctx.term()


# ---------------------------------------------------------------------------------------------- wire
def test_frame_round_trip_over_tcp_zero_copy(push_pull):
    push, pull = push_pull
    image, scale, pad = letterbox(first_frame("openpose/street.avi"), (432, 368))
    header = make_header(image, scale=scale, pad=pad)
    parts = encode_frame(header, image)
    assert isinstance(parts[1], memoryview) and parts[1].obj is image  # no copy on the sending side
    push.send_multipart(parts, copy=False)
    assert pull.poll(5000), "nothing received"
    got = pull.recv_multipart(copy=False)
    h, img = decode(got)
    assert h == header
    assert img.shape == (368, 432, 3) and img.dtype == np.uint8
    assert np.array_equal(img, image)
    assert not img.flags.owndata and not img.flags.writeable  # a view on the received ZeroMQ frame
    # the stage passes memoryviews of the frames: same result
    h2, img2 = decode([p.buffer for p in got])
    assert h2 == header and np.array_equal(img2, image)


@pytest.mark.parametrize("kind", ["status", "eos"])
def test_status_round_trip(push_pull, kind):
    push, pull = push_pull
    header = make_header(None, kind=kind, source_up=False, source_fps=None, orig_size=None)
    push.send_multipart(encode_status(header), copy=False)
    assert pull.poll(5000)
    h, img = decode(pull.recv_multipart())
    assert h == header and img is None


def test_header_is_plain_json():
    image = np.zeros((4, 6, 3), np.uint8)
    obj = json.loads(encode_frame(make_header(image), image)[0])
    assert obj["v"] == WIRE_VERSION and obj["shape"] == [4, 6, 3] and obj["pad"] == [0, 62]
    assert obj["dtype"] == "uint8" and obj["source_up"] is True


def _frame_msg(**changes):
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    obj = json.loads(encode_frame(make_header(image), image)[0])
    obj.update(changes)
    return [json.dumps(obj).encode(), image.tobytes()]


def _status_msg(**changes):
    obj = json.loads(encode_status(make_header(None, kind="status"))[0])
    obj.update(changes)
    return [json.dumps(obj).encode()]


def _without(key):
    msg = _frame_msg()
    obj = json.loads(msg[0])
    del obj[key]
    return [json.dumps(obj).encode(), msg[1]]


MALFORMED = {
    "three_parts": ("parts", _frame_msg() + [b"x"]),
    "no_parts": ("parts", []),
    "frame_without_pixels": ("parts", _frame_msg()[:1]),
    "status_with_pixels": ("parts", _status_msg() + [b"\0" * 72]),
    "big_header": ("header_size", [b" " * (MAX_HEADER_BYTES + 1) + b"{}", b""]),
    "not_utf8": ("json", [b"\xff\xfe{", b""]),
    "not_json": ("json", [b"{v: 1", b""]),
    "json_array": ("json", [b"[1, 2, 3]", b""]),
    "json_nan": ("json", [b'{"v": 1, "capture_ts": NaN}', b""]),
    "no_version": ("field", [json.dumps({k: v for k, v in json.loads(_frame_msg()[0]).items() if k != "v"}).encode(), b""]),
    "missing_seq": ("field", _without("seq")),
    "unknown_key": ("field", _frame_msg(extra=1)),
    "bad_camera": ("field", _frame_msg(camera="cam 1; rm -rf")),
    "long_camera": ("field", _frame_msg(camera="c" * 65)),
    "negative_seq": ("field", _frame_msg(seq=-1)),
    "bool_seq": ("field", _frame_msg(seq=True)),
    "bad_kind": ("field", _frame_msg(kind="video")),
    "string_source_up": ("field", _frame_msg(source_up="yes")),
    "zero_scale": ("field", _frame_msg(scale=0)),
    "version_1": ("version", _frame_msg(v=1)),  # v1 had no session: readers and stage ship together
    "version_1_without_session": ("version", [json.dumps({k: v for k, v in json.loads(_frame_msg(v=1)[0]).items()
                                                          if k != "session"}).encode(), _frame_msg()[1]]),
    "version_3": ("version", _frame_msg(v=3)),
    "missing_session": ("field", _without("session")),
    "short_session": ("field", _frame_msg(session="ab" * 15)),
    "upper_session": ("field", _frame_msg(session="AB" * 16)),
    "int_session": ("field", _frame_msg(session=12345)),
    "four_channels": ("shape", _frame_msg(shape=[4, 6, 4])),
    "zero_height": ("shape", _frame_msg(shape=[0, 6, 3])),
    "huge_shape": ("shape", _frame_msg(shape=[5000, 6, 3])),
    "status_with_shape": ("shape", _status_msg(shape=[4, 6, 3])),
    "float_dtype": ("dtype", _frame_msg(dtype="float32")),
    "short_pixels": ("size", [_frame_msg()[0], _frame_msg()[1][:-1]]),
    "long_pixels": ("size", [_frame_msg()[0], _frame_msg()[1] + b"\0"]),
    # each of these killed the stage before (RecursionError / OverflowError), issue 9
    "nested_arrays": ("json", [b"[" * 1000 + b"]" * 1000, b""]),
    "nested_in_field": ("json", [b'{"v": 1, "shape": ' + b"[" * 1500 + b"]" * 1500 + b"}", b""]),
    "huge_dropped": ("field", _status_msg(dropped=10**400)),
    "huge_reconnects": ("field", _status_msg(reconnects=10**400)),
    "seq_2_63": ("field", _frame_msg(seq=2**63)),
    "huge_int_capture_ts": ("field", _frame_msg(capture_ts=10**400)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_messages_give_their_reason(case):
    reason, parts = MALFORMED[case]
    with pytest.raises(WireError) as info:
        decode(parts)
    assert info.value.reason == reason, str(info.value)
    assert info.value.reason in REASONS and isinstance(info.value, ValueError)


def test_session_is_the_process_token_unless_given():
    from pipeline.wire import is_session, new_session, process_session

    image = np.zeros((4, 6, 3), np.uint8)
    obj = json.loads(encode_frame(make_header(image), image)[0])
    assert obj["session"] == process_session() == process_session() and is_session(obj["session"])
    other = new_session()
    assert other != process_session() and is_session(other)
    assert decode(encode_frame(make_header(image, session=other), image))[0].session == other
    with pytest.raises(WireError) as info:
        encode_frame(make_header(image, session="not-a-token"), image)
    assert info.value.reason == "field"


def test_size_limit_is_enforced():
    msg = _frame_msg()
    with pytest.raises(WireError) as info:
        decode(msg, max_frame_bytes=4 * 6 * 3 - 1)
    assert info.value.reason == "size"
    assert decode(msg, max_frame_bytes=4 * 6 * 3)[1].shape == (4, 6, 3)


def test_malformed_over_real_socket_is_rejected(push_pull):
    push, pull = push_pull
    push.send_multipart(_frame_msg(shape=[4, 6, 4]))
    assert pull.poll(5000)
    with pytest.raises(WireError) as info:
        decode(pull.recv_multipart(copy=False))
    assert info.value.reason == "shape"


def test_encode_rejects_inconsistent_images():
    image = np.zeros((8, 10, 3), np.uint8)
    with pytest.raises(WireError) as info:
        encode_frame(make_header(image, shape=(8, 11, 3)), image)
    assert info.value.reason == "shape"
    with pytest.raises(WireError) as info:
        encode_frame(make_header(image), image.astype(np.float32))
    assert info.value.reason == "dtype"
    with pytest.raises(ValueError):
        view = np.zeros((8, 20, 3), np.uint8)[:, ::2]
        encode_frame(make_header(view), view)
    with pytest.raises(WireError):
        encode_frame(replace(make_header(image), camera="a/b"), image)
    with pytest.raises(WireError):
        encode_status(make_header(image))


# ---------------------------------------------------------------------------------------------- letterbox
@pytest.mark.parametrize("rel,size", [
    ("openpose/street.avi", (432, 368)),      # 1280x720 shrink, pads top/bottom
    ("stgcn/ta_chi.mp4", (432, 368)),          # 340x256 enlarge
    ("vtest/vtest.avi", (432, 368)),           # 480x360 shrink
    ("openpose/street.avi", (600, 200)),       # wide target: pads left/right
    ("stgcn/ta_chi.mp4", (200, 400)),          # tall target: shrink, pads top/bottom
])
def test_letterbox_shapes_padding_and_content(rel, size):
    frame = first_frame(rel)
    h0, w0 = frame.shape[:2]
    out, scale, pad = letterbox(frame, size)
    w, h = size
    assert out.shape == (h, w, 3) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    assert scale == pytest.approx(min(w / w0, h / h0))
    assert isinstance(pad[0], int) and isinstance(pad[1], int)
    _, (nw, nh), pad2 = letterbox_geometry((w0, h0), size)
    assert pad2 == pad and (nw == w or nh == h)
    # centred: left/right (top/bottom) margins differ by at most one pixel
    assert abs((w - nw - pad[0]) - pad[0]) <= 1 and abs((h - nh - pad[1]) - pad[1]) <= 1
    # padding is exactly zero, the content is the resized frame
    mask = np.ones((h, w), bool)
    mask[pad[1]:pad[1] + nh, pad[0]:pad[0] + nw] = False
    assert not out[mask].any()
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    ref = cv2.resize(frame, (nw, nh), interpolation=interp)
    assert np.array_equal(out[pad[1]:pad[1] + nh, pad[0]:pad[0] + nw], ref)


def test_letterbox_identity_size_copies():
    frame = first_frame("stgcn/ta_chi.mp4")
    out, scale, pad = letterbox(frame, (frame.shape[1], frame.shape[0]))
    assert scale == 1.0 and pad == (0, 0) and np.array_equal(out, frame) and out is not frame


def test_letterbox_rejects_bad_input():
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10), np.uint8), (32, 32))
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10, 3), np.float32), (32, 32))
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10, 3), np.uint8), (0, 32))


def _blob_frame(frame: np.ndarray, cx: float, cy: float, sigma: float) -> np.ndarray:
    """The real frame, darkened, with a bright Gaussian blob centred at pixel-centre (cx, cy)."""
    h, w = frame.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    blob = 255.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
    out = (frame.astype(np.float32) * 0.0 + blob[..., None]).clip(0, 255)
    return out.astype(np.uint8)


def _centroid(img: np.ndarray) -> tuple[float, float]:
    g = img[..., 0].astype(np.float64)
    g[g < 8] = 0
    yy, xx = np.mgrid[0:g.shape[0], 0:g.shape[1]]
    return float((g * xx).sum() / g.sum()), float((g * yy).sum() / g.sum())


@pytest.mark.parametrize("rel,size,sigma", [
    ("openpose/street.avi", (432, 368), 12.0),   # shrink (INTER_AREA)
    ("stgcn/ta_chi.mp4", (432, 368), 4.0),       # enlarge (INTER_LINEAR)
])
def test_unletterbox_matches_cv2_geometry(rel, size, sigma):
    """A blob drawn at a known original-frame position is found, after cv2 resizing, where
    letterbox_points predicts, and unletterbox brings it back to the original position."""
    frame = first_frame(rel)
    h0, w0 = frame.shape[:2]
    _, (nw, nh), _ = letterbox_geometry((w0, h0), size)
    for cx, cy in [(0.23 * w0, 0.31 * h0), (0.77 * w0, 0.64 * h0), (0.5 * w0, 0.5 * h0)]:
        img, scale, pad = letterbox(_blob_frame(frame, cx, cy, sigma), size)
        mx, my = _centroid(img)
        # pixel-centre convention with cv2's true per-axis scale: the blob lands exactly there
        ex = (cx + 0.5) * nw / w0 - 0.5 + pad[0]
        ey = (cy + 0.5) * nh / h0 - 0.5 + pad[1]
        assert abs(mx - ex) < 0.1 and abs(my - ey) < 0.1, (mx, my, ex, ey)
        # the single isotropic scale of the header is exact on the axis that fills the input and off by
        # the size rounding (< 0.5 input pixel) on the other
        tol_in = [0.1 if abs(n / n0 - scale) < 1e-12 else 0.5 for n, n0 in ((nw, w0), (nh, h0))]
        pred = letterbox_points(np.array([cx, cy, 1.0]), scale, pad)
        assert abs(mx - pred[0]) < tol_in[0] and abs(my - pred[1]) < tol_in[1], (mx, my, pred)
        back = unletterbox(np.array([[mx, my, 0.8]]), scale, pad)[0]
        assert abs(back[0] - cx) < tol_in[0] / scale and abs(back[1] - cy) < tol_in[1] / scale, (back, cx, cy)
        assert back[2] == pytest.approx(0.8)
    assert min(tol_in) == 0.1  # one axis is always checked tightly


def test_unletterbox_round_trip_and_missing_joints():
    rng = np.random.default_rng(0)
    for (w0, h0), size in [((1280, 720), (432, 368)), ((340, 256), (432, 368)), ((480, 360), (368, 432))]:
        scale, _, pad = letterbox_geometry((w0, h0), size)
        pts = np.zeros((3, 18, 3), np.float32)  # (P, V, 3) COCO-18 persons
        pts[..., 0] = rng.uniform(0, w0 - 1, (3, 18))
        pts[..., 1] = rng.uniform(0, h0 - 1, (3, 18))
        pts[..., 2] = rng.uniform(0.1, 1.0, (3, 18))
        pts[1, 4] = 0.0       # a missing joint
        pts[2, 7, 2] = 0.0    # score 0 with stale coordinates: also missing
        fwd = letterbox_points(pts, scale, pad)
        assert fwd[..., 0].max() < size[0] and fwd[..., 1].max() < size[1] and fwd[..., :2].min() > -0.5
        back = unletterbox(fwd, scale, pad)
        assert back.shape == pts.shape and back.dtype == np.float32
        present = pts[..., 2] > 0
        np.testing.assert_allclose(back[present], pts[present], atol=1e-3)
        assert not back[1, 4].any() and not back[2, 7].any()
        assert np.array_equal(back[..., 2], pts[..., 2])


def test_unletterbox_rejects_bad_input():
    with pytest.raises(ValueError):
        unletterbox(np.zeros((2, 18, 2)), 1.0, (0, 0))
    with pytest.raises(ValueError):
        unletterbox(np.zeros((2, 18, 3)), 0.0, (0, 0))
