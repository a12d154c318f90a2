"""The source rules (pipeline.sources): one kind rule for the daemon and the readers, camera ids
derived from ``--source`` URLs without credentials, and URL masking."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.config import load_config
from pipeline.daemon import reader_settings
from pipeline.sources import derive_camera_name, infer_kind, is_camera_name, lossless_default, source_kind

LIVE_URLS = ("rtsp://h/x", "rtsps://h/x", "rtmp://host/x", "http://h/x.mjpg", "https://h/x", "udp://239.0.0.1:1234",
             "tcp://h:5000", "srt://h:9000", "RTMP://host/x")


@pytest.mark.parametrize("url", LIVE_URLS)
def test_every_network_url_is_live(url):
    assert infer_kind(url) == "rtsp" and source_kind("auto", url) == "rtsp" and not lossless_default("rtsp")


def test_source_kind_keeps_an_explicit_kind_and_rejects_unknown_ones():
    assert source_kind("file", "rtmp://host/x") == "file" and source_kind("device", "0") == "device"
    assert source_kind("auto", "/dev/video3") == "device" and source_kind("auto", "clip.mp4") == "file"
    with pytest.raises(ValueError):
        source_kind("usb", "0")


@pytest.mark.parametrize("url", ["rtmp://host/x", "udp://239.0.0.1:1234", "srt://h:9000", "tcp://h:5000"])
def test_daemon_gives_a_non_rtsp_network_camera_a_live_reader(tmp_path, url):
    """The daemon's answer is the readers' answer: an rtmp:// camera reconnects instead of running as
    a lossless file (where a read timeout would end the camera)."""
    path = tmp_path / "cams.yaml"
    path.write_text(f"sources:\n  - name: cam1\n    url: \"{url}\"\n")
    cfg = load_config(path)
    settings = reader_settings(cfg, cfg.sources[0], (432, 368))
    assert settings.kind == "rtsp" and settings.source_kind == "rtsp"
    assert settings.lossless is False and not settings.is_lossless


def test_camera_name_never_holds_credentials_or_query_tokens():
    name = derive_camera_name("rtsp://admin:PW@host:554", set())
    assert name == "host_554" and "PW" not in name and "admin" not in name
    for url in ("rtsp://admin:PW@host:554/", "rtsp://admin:PW@host", "http://tok3n@cam/?token=PW", "rtsp://admin:PW@10.0.0.5"):
        name = derive_camera_name(url, set())
        assert is_camera_name(name) and "PW" not in name and "admin" not in name and "tok3n" not in name, (url, name)
    assert derive_camera_name("http://cam/snap.jpg?password=PW#frag", set()) == "snap"


def test_camera_name_keeps_the_path_stem_rule():
    assert derive_camera_name("rtsp://u:p@cam.local/stream1", set()) == "stream1"
    assert derive_camera_name("rtsp://10.0.0.5:554/Streaming/101", set()) == "101"
    assert derive_camera_name("rtsp://cam:554", set()) == "cam_554"
    assert derive_camera_name("/path/my clip.mp4", set()) == "my_clip"
    assert derive_camera_name("/dev/video0", set()) == "video0" and derive_camera_name("0", set()) == "0"
    assert derive_camera_name("", set()) == "cam"
    taken: set[str] = set()
    assert [derive_camera_name(u, taken) for u in ("/a/x.mp4", "/b/x.mp4", "/c/x.avi")] == ["x", "x-2", "x-3"]
    long = derive_camera_name("/v/" + "a" * 100 + ".mp4", set())
    assert len(long) == 56 and is_camera_name(long)


def test_cli_source_without_path_hides_the_password():
    from pipeline.cli import _load

    cfg = _load(SimpleNamespace(config=None, source=["rtsp://admin:PW@host:554"]))
    assert [s.name for s in cfg.sources] == ["host_554"] and cfg.sources[0].url == "rtsp://admin:PW@host:554"


def test_camera_name_rule():
    assert is_camera_name("cam_1-a") and is_camera_name("x" * 64)
    assert not any(is_camera_name(v) for v in ("", "x" * 65, "bad name", "a:b", None, 3))
