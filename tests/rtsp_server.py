"""Tiny looping RTSP server for tests (gst-rtsp-server), run with Debian's ``/usr/bin/python3``.

It emulates a live IP camera: a private pipeline decodes a real clip at its own frame rate and loops
it for ever (flushing seek on EOS); each decoded frame is pushed into the RTSP media through an
``appsrc`` (live, timestamps from the running clock), encoded as H.264 (x264, zerolatency, one key
frame a second) and served at ``rtsp://127.0.0.1:PORT/MOUNT``. The media is shared: every client sees
the same live stream. With ``--user``/``--password`` the server requires HTTP basic authentication.

Prints ``READY rtsp://127.0.0.1:PORT/MOUNT`` (no credentials) on stdout once it listens; SIGTERM or
SIGINT stops it. Needs the packages installed by ``.ci/install-rtsp.sh``.

Usage::

    /usr/bin/python3 tests/rtsp_server.py --clip ../shared/data/videos/stgcn/ta_chi.mp4 --port 8554
"""

import argparse
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


class LoopingSource:
    """Decodes ``clip`` in real time for ever; keeps a reference to the current RTSP ``appsrc``."""

    def __init__(self, clip):
        self.lock = threading.Lock()
        self.appsrc = None
        self.caps = None
        self.frames = 0
        self.first_sample = threading.Event()
        self.pipeline = Gst.parse_launch(
            "filesrc name=file ! decodebin ! videoconvert ! video/x-raw,format=I420 "
            "! appsink name=sink sync=true emit-signals=true max-buffers=2 drop=true"
        )
        self.pipeline.get_by_name("file").set_property("location", clip)
        sink = self.pipeline.get_by_name("sink")
        sink.connect("new-sample", self._on_sample)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)

    def start(self):
        self.pipeline.set_state(Gst.State.PLAYING)

    def stop(self):
        self.pipeline.set_state(Gst.State.NULL)

    def _on_message(self, _bus, message):
        if message.type == Gst.MessageType.EOS:
            # Loop: rewind the private decoding pipeline; the RTSP side never sees EOS.
            self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif message.type == Gst.MessageType.ERROR:
            err, debug = message.parse_error()
            sys.stderr.write("rtsp_server: source error: %s (%s)\n" % (err, debug))
            sys.stderr.flush()

    def _on_sample(self, sink):
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        with self.lock:
            if self.caps is None:
                self.first_sample.set()
            self.caps = sample.get_caps()
            src = self.appsrc
            self.frames += 1
        if src is not None:
            buf = sample.get_buffer().copy()
            # Let appsrc (do-timestamp) stamp it with the media's running time: a live camera.
            buf.pts = Gst.CLOCK_TIME_NONE
            buf.dts = Gst.CLOCK_TIME_NONE
            src.emit("push-buffer", buf)
        return Gst.FlowReturn.OK

    def attach(self, appsrc):
        with self.lock:
            if self.caps is not None:
                appsrc.set_property("caps", self.caps)
            self.appsrc = appsrc

    def detach(self, appsrc):
        with self.lock:
            if self.appsrc is appsrc:
                self.appsrc = None


class Factory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, source, fps):
        super().__init__()
        self.source = source
        keyint = max(1, int(round(fps)))
        self.launch = (
            "( appsrc name=src is-live=true format=time do-timestamp=true "
            "! queue leaky=downstream max-size-buffers=4 "
            "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=%d bitrate=1500 "
            "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )" % keyint
        )
        self.set_shared(True)
        self.connect("media-configure", self._on_configure)

    def do_create_element(self, url):
        return Gst.parse_launch(self.launch)

    def _on_configure(self, _factory, media):
        appsrc = media.get_element().get_by_name("src")
        self.source.attach(appsrc)
        media.connect("unprepared", lambda _m: self.source.detach(appsrc))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", required=True, help="video file to loop")
    ap.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    ap.add_argument("--mount", default="/cam", help="mount path, e.g. /cam")
    ap.add_argument("--fps", type=float, default=30.0, help="key frame interval in frames (one a second)")
    ap.add_argument("--user", default=None)
    ap.add_argument("--password", default=None)
    args = ap.parse_args()

    Gst.init(None)
    source = LoopingSource(args.clip)
    source.start()

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = Factory(source, args.fps)
    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(args.mount, factory)
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    result = {"code": 0}

    def listen_when_decoding():
        # Listen only once the clip decodes (caps known): a client never meets a half-ready media.
        if not source.first_sample.is_set():
            return True  # poll again
        if server.attach(None) == 0:
            sys.stderr.write("rtsp_server: cannot listen on 127.0.0.1:%d\n" % args.port)
            result["code"] = 1
            loop.quit()
            return False
        print("READY rtsp://127.0.0.1:%d%s" % (args.port, args.mount), flush=True)
        return False

    GLib.timeout_add(10, listen_when_decoding)
    try:
        loop.run()
    finally:
        source.stop()
    return result["code"]


if __name__ == "__main__":
    sys.exit(main())
