"""Virtual surveillance cameras: re-project real 3D skeleton sequences through random CCTV views.

The action models are trained on Kinect lab recordings (camera about 1 m high, level, frontal,
2-4 m from the subject) but deployed on CCTV (cameras 2-5 m high, pitched down, at any yaw around
the person, with varied focal length and distance). This module is the "virtual surveillance
camera" augmentation asked for in issue 13 of the project: the metric 3D joints of a recording
(:attr:`engines.datasets.SkeletonSequence.points3d`) are stood on an estimated ground plane and
projected through a randomly placed pinhole camera, giving the pixels and depths a detector and a
depth estimator would see from that viewpoint. The camera is the ideal pinhole of Hartley and
Zisserman, *Multiple View Geometry in Computer Vision* (2nd ed., 2004), Sec. 6.1:
``x ~ K R (X - C)`` with ``K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]]`` (square pixels, principal
point at the image centre, no lens distortion) and ``f = (W / 2) / tan(hfov / 2)``.

Frames (all metres, right-handed):

* **recording frame**: the frame of ``points3d``, the OpenCV convention of the camera that recorded
  the sequence: x right, y down, z forward.
* **world frame**: origin on the ground below the persons' mean hip centre over the first frames;
  ``Z`` up (the estimated up direction), ``Y`` the recording camera's forward direction laid flat
  on the ground (pointing away from the recording camera), ``X = Y x Z`` (about the recording
  camera's x). The persons are then turned about ``Z`` by the sampled yaw (counter-clockwise seen
  from above); the virtual camera stands at ``(0, -distance, height)``, i.e. yaw 0 is the recording
  viewpoint raised onto a pole, yaw 180 looks at the persons from behind.
* **virtual camera frame**: OpenCV convention again (x right, y down, z forward); the returned
  depth is its ``z``.

Up and ground (:func:`world_frame`): Kinect sensors are roughly level, so up is ``-y`` of the
recording frame by default (``up="auto"`` estimates it from the ankle-to-neck direction instead;
NTU cameras, for example, are pitched: the NTU sample's body axis leans 18 degrees). The ground lies
:data:`ANKLE_HEIGHT_M` below a low percentile (``GROUND_PERCENTILE``) of the ankles' height over the
whole sequence, i.e. a high percentile of their ``y`` for a level camera (robust to kicks, jumps and
the legs Kinect mis-tracks in bends); without ankles it is :data:`HIP_HEIGHT_M` below the hip
centre, and without hips :data:`SENSOR_HEIGHT_M` below the recording camera. Multi-person sequences
(SBU, NTU mutual actions) get one rigid transform for all persons, so their relative placement is
kept.

Camera sampling (:class:`CameraRanges`, :func:`sample_view`): the default ``aim=True`` points the
camera at the centre of the persons' 3D bounding box over the sequence and then moves the optical
axis off it by a random pan/tilt within ``aim_jitter`` of the angular slack left by the persons'
extent, so that they stay in frame, and within ``pitch_deg``; (height, distance, field of view,
image size) are drawn together and redrawn (vectorised, up to ``tries`` candidates) until the aim
line's downward pitch lies in ``pitch_deg`` and the persons fill at most ``max_fill`` of each field
of view (about 80 % of single default draws pass on MSR and UTD: mostly far, low cameras whose
aim line is flatter than 10 degrees are redrawn, so the accepted distances skew nearer). With
``aim=False`` the pitch is drawn from ``pitch_deg`` directly and the camera is only panned towards
the persons; persons then often leave the image at long distances and steep pitches, as on real
CCTV.

Joints behind the camera (``z <= NEAR_M``) or outside ``[0, W) x [0, H)`` get score 0 and all-zero
rows, the readers' convention for missing joints.

NumPy only and vectorised over frames, persons and joints (internally on coordinate-major
``(3, L, M, 18)`` arrays): one 100-frame sequence costs about 0.2-0.4 ms on a loaded 2-core CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CameraRanges", "VirtualView", "world_frame", "estimate_up", "sample_view", "project_virtual",
           "ANKLE_HEIGHT_M", "HIP_HEIGHT_M", "SENSOR_HEIGHT_M", "NEAR_M"]

#: Height of the ankle joint above the floor (metres), added below the ankles to find the ground.
ANKLE_HEIGHT_M: float = 0.08
#: Typical standing height of the hip joints (metres), the fallback when no ankle is present.
HIP_HEIGHT_M: float = 0.9
#: Typical mounting height of a lab Kinect (metres), the last fallback for the ground.
SENSOR_HEIGHT_M: float = 1.0
#: Percentile of the ankles' height taken as "standing on the ground" (low: robust to kicks).
GROUND_PERCENTILE: float = 5.0
#: Frames averaged for the persons' start position (the world origin).
ORIGIN_FRAMES: int = 5
#: Joints closer to the virtual camera's image plane than this (metres) count as behind it.
NEAR_M: float = 0.05
#: Nearest horizontal range (metres) used when judging how much of the view a person fills.
_MIN_RANGE_M: float = 0.3

# COCO-18 indices used here (engines.layouts.COCO18_NAMES)
_NECK, _R_HIP, _L_HIP, _R_ANKLE, _L_ANKLE = 1, 8, 11, 10, 13


@dataclass(frozen=True)
class CameraRanges:
    """Ranges of the random virtual surveillance camera; uniform draws unless stated.

    Attributes:
        height_m: camera height above the ground, metres.
        pitch_deg: downward pitch of the optical axis, degrees below the horizontal; with ``aim``
            the line from the camera to the persons' centre must lie in it too.
        yaw_deg: the persons' turn about the vertical, degrees; ``[0, 360)`` puts the camera all
            round them (0 = the recording viewpoint, 180 = from behind).
        distance_m: horizontal distance from the camera to the persons' start position, metres.
        hfov_deg: horizontal field of view, degrees (sets the focal length for the image width).
        image_sizes: ``(W, H)`` pixel sizes, one drawn with equal probability.
        roll_deg: rotation about the optical axis, degrees (CCTV is usually level: 0).
        aim: aim at the persons (see the module docstring) instead of a free pitch.
        aim_jitter: in ``[0, 1]``: how far the optical axis may move off the persons' centre, as a
            fraction of the angular slack left by their extent (1: up to the image border); the
            tilt is also kept inside ``pitch_deg``.
        max_fill: with ``aim``, the persons' angular extent must stay below this fraction of each
            field of view (too close and too narrow views are redrawn).
        tries: candidates drawn at once for the ``aim`` constraints; when none satisfies them, the
            least violating one is used.
    """

    height_m: tuple[float, float] = (2.0, 5.0)
    pitch_deg: tuple[float, float] = (10.0, 50.0)
    yaw_deg: tuple[float, float] = (0.0, 360.0)
    distance_m: tuple[float, float] = (2.5, 15.0)
    hfov_deg: tuple[float, float] = (45.0, 100.0)
    image_sizes: tuple[tuple[int, int], ...] = ((320, 240), (640, 480), (1280, 720), (1920, 1080))
    roll_deg: tuple[float, float] = (0.0, 0.0)
    aim: bool = True
    aim_jitter: float = 0.7
    max_fill: float = 0.8
    tries: int = 32

    def __post_init__(self):
        for name in ("height_m", "pitch_deg", "yaw_deg", "distance_m", "hfov_deg", "roll_deg"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"CameraRanges.{name}: need low <= high, got {(lo, hi)}")
        if self.height_m[0] <= 0 or self.distance_m[0] < 0:
            raise ValueError("CameraRanges: height must be > 0 and distance >= 0")
        if not (0 < self.hfov_deg[0] and self.hfov_deg[1] < 180):
            raise ValueError(f"CameraRanges.hfov_deg must lie in (0, 180), got {self.hfov_deg}")
        if not self.image_sizes or any(w <= 0 or h <= 0 for w, h in self.image_sizes):
            raise ValueError(f"CameraRanges.image_sizes: need positive (W, H) pairs, got {self.image_sizes}")
        if not 0 <= self.aim_jitter <= 1 or not 0 < self.max_fill <= 1 or self.tries < 1:
            raise ValueError("CameraRanges: need 0 <= aim_jitter <= 1, 0 < max_fill <= 1, tries >= 1")


@dataclass(frozen=True)
class VirtualView:
    """One sampled virtual camera, with the transform from the recording frame into it.

    ``camera = rotation @ p + translation`` maps a recording-frame point ``p`` (metres) into the
    virtual camera frame (x right, y down, z forward); ``u = focal_px x / z + W / 2``,
    ``v = focal_px y / z + H / 2``. ``world_rotation`` and ``origin`` map the recording frame into
    the (yaw-turned) world frame, ``P = world_rotation @ (p - origin)``; ``camera_rotation`` and
    ``centre`` are the camera's pose there, ``camera = camera_rotation @ (P - centre)``.
    """

    rotation: np.ndarray  # (3, 3) float64, recording -> virtual camera
    translation: np.ndarray  # (3,) float64, metres
    focal_px: float
    frame_size: tuple[int, int]
    world_rotation: np.ndarray  # (3, 3) float64, recording -> yaw-turned world
    origin: np.ndarray  # (3,) float64, world origin in the recording frame
    up: np.ndarray  # (3,) float64, unit up direction in the recording frame
    camera_rotation: np.ndarray  # (3, 3) float64, world -> camera; rows: right, down, forward
    centre: np.ndarray  # (3,) float64, camera centre in the world frame, (0, -distance, height)
    height_m: float
    distance_m: float
    yaw_deg: float
    pitch_deg: float  # of the optical axis, below the horizontal
    pan_deg: float  # of the optical axis, from world +Y towards +X
    roll_deg: float
    hfov_deg: float

    def project(self, points3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project recording-frame joints through this camera.

        Args:
            points3d: ``(..., 3)`` metres in the recording frame; all-zero rows are missing joints.

        Returns:
            keypoints ``(..., 3)`` float32: ``u, v`` pixels of a ``frame_size`` image (origin top
            left, y down) and score 1 for present joints in front of the camera and inside the
            image, else an all-zero row; depth ``(...)`` float32: the virtual camera's ``z`` in
            metres, 0 where the score is 0.
        """
        coords = _coordinate_major(points3d)
        return self._project(coords, _present(coords))

    def _project(self, coords: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``coords`` ``(3, ...)`` recording frame, ``present`` ``(...)`` -> (keypoints, depth)."""
        shape = coords.shape[1:]
        flat = coords.reshape(3, -1)
        cam = self.rotation @ flat + self.translation[:, None]  # (3, N)
        z = cam[2]
        in_front = z > NEAR_M
        inv_z = self.focal_px / np.where(in_front, z, 1.0)
        width, height = self.frame_size
        u = cam[0] * inv_z + 0.5 * width
        v = cam[1] * inv_z + 0.5 * height
        ok = present.reshape(-1) & in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        keypoints = np.stack([np.where(ok, u, 0.0), np.where(ok, v, 0.0), ok], axis=-1).astype(np.float32)
        depth = np.where(ok, z, 0.0).astype(np.float32)
        return keypoints.reshape(shape + (3,)), depth.reshape(shape)

    def world_to_recording(self, points_world: np.ndarray) -> np.ndarray:
        """``(..., 3)`` world-frame metres -> recording-frame metres (inverse of ``world_rotation``)."""
        return np.asarray(points_world, dtype=np.float64) @ self.world_rotation + self.origin


# Internals work on coordinate-major arrays (3, L, M, 18): NumPy reduces and multiplies those far
# faster than arrays with a trailing axis of 3.

def _coordinate_major(points3d) -> np.ndarray:
    pts = np.asarray(points3d)
    if pts.shape[-1:] != (3,):
        raise ValueError(f"points3d must end in 3 coordinates, got {pts.shape}")
    return np.ascontiguousarray(np.moveaxis(pts, -1, 0), dtype=np.float64)


def _check(points3d) -> np.ndarray:
    pts = np.asarray(points3d)
    if pts.ndim != 4 or pts.shape[2:] != (18, 3):
        raise ValueError(f"points3d must be (L, M, 18, 3), got {pts.shape}")
    return _coordinate_major(pts)


def _present(coords: np.ndarray) -> np.ndarray:
    return (coords[0] != 0.0) | (coords[1] != 0.0) | (coords[2] != 0.0)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _low_percentile(values: np.ndarray, q: float) -> float:
    """Nearest-rank percentile ``q`` of a 1-D array (cheaper than ``np.percentile`` on small arrays)."""
    k = min(int(round(q / 100.0 * (len(values) - 1))), len(values) - 1)
    return float(np.partition(values, k)[k])


_LEVEL_UP = np.array([0.0, -1.0, 0.0])


def estimate_up(points3d: np.ndarray, max_tilt_deg: float = 30.0) -> np.ndarray:
    """Up direction of a recording from its persons' body axis, in the recording frame.

    The median over frames and persons of the unit vectors from the ankles' midpoint to the neck
    (people mostly stand upright). Falls back to ``-y`` (a level camera) when no frame has neck and
    both ankles, or when the estimate is more than ``max_tilt_deg`` away from ``-y`` (bending,
    sitting or lying actions).

    Args:
        points3d: ``(L, M, 18, 3)`` metres, recording frame (x right, y down, z forward).

    Returns:
        ``(3,)`` float64 unit vector.
    """
    coords = _check(points3d)
    return _estimate_up(coords, _present(coords), max_tilt_deg)


def _estimate_up(coords: np.ndarray, present: np.ndarray, max_tilt_deg: float = 30.0) -> np.ndarray:
    both = present[..., _NECK] & present[..., _R_ANKLE] & present[..., _L_ANKLE]  # (L, M)
    if not both.any():
        return _LEVEL_UP.copy()
    axis = coords[..., _NECK] - 0.5 * (coords[..., _R_ANKLE] + coords[..., _L_ANKLE])  # (3, L, M)
    axis = axis[:, both]
    axis = axis / np.maximum(np.sqrt((axis ** 2).sum(axis=0)), 1e-9)
    up = np.median(axis, axis=1)
    norm = float(np.linalg.norm(up))
    if norm < 1e-6:
        return _LEVEL_UP.copy()
    up = up / norm
    if math.degrees(math.acos(min(max(float(up @ _LEVEL_UP), -1.0), 1.0))) > max_tilt_deg:
        return _LEVEL_UP.copy()
    return up


def world_frame(points3d: np.ndarray, up: str | np.ndarray = "camera") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The world frame of a recording: persons standing at the origin on the ground, ``Z`` up.

    Args:
        points3d: ``(L, M, 18, 3)`` metres, recording frame (x right, y down, z forward); all-zero
            rows are missing joints.
        up: ``"camera"`` (``-y``, a level recording camera), ``"auto"`` (:func:`estimate_up`) or a
            ``(3,)`` vector in the recording frame.

    Returns:
        ``(basis, origin, up)``: ``basis`` ``(3, 3)`` float64 with rows the world ``X, Y, Z`` axes in
        recording coordinates (``P = basis @ (p - origin)``), ``origin`` ``(3,)`` the ground point
        below the persons' mean hip centre over their first :data:`ORIGIN_FRAMES` frames, ``up``
        ``(3,)`` unit.

    Raises:
        ValueError: on a wrong shape, an empty sequence, or an up vector along the recording
            camera's optical axis.
    """
    coords = _check(points3d)
    return _world_frame(coords, _present(coords), up)


def _world_frame(coords: np.ndarray, present: np.ndarray, up) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not present.any():
        raise ValueError("points3d has no present joint")
    if isinstance(up, str):
        if up == "camera":
            up_vec = _LEVEL_UP.copy()
        elif up == "auto":
            up_vec = _estimate_up(coords, present)
        else:
            raise ValueError(f"up must be 'camera', 'auto' or a vector, got {up!r}")
    else:
        up_vec = np.asarray(up, dtype=np.float64).reshape(3)
        up_vec = up_vec / np.linalg.norm(up_vec)
    forward = np.array([0.0, 0.0, 1.0]) - up_vec[2] * up_vec  # recording optical axis laid flat
    if np.linalg.norm(forward) < 1e-6:
        raise ValueError("the up direction is the recording camera's optical axis")
    forward /= np.linalg.norm(forward)
    basis = np.stack([_cross(forward, up_vec), forward, up_vec])  # rows X, Y, Z

    ankles = present[..., [_R_ANKLE, _L_ANKLE]]  # (L, M, 2)
    hips = present[..., _R_HIP] & present[..., _L_HIP]  # (L, M)
    hip_centre = 0.5 * (coords[..., _R_HIP] + coords[..., _L_HIP])  # (3, L, M)
    if ankles.any():
        ankle_heights = np.tensordot(up_vec, coords[..., [_R_ANKLE, _L_ANKLE]], axes=1)  # (L, M, 2)
        ground = _low_percentile(ankle_heights[ankles], GROUND_PERCENTILE) - ANKLE_HEIGHT_M
    elif hips.any():
        ground = float(np.median(up_vec @ hip_centre[:, hips])) - HIP_HEIGHT_M
    else:
        ground = -SENSOR_HEIGHT_M

    frames_with_hips = np.flatnonzero(hips.any(axis=1))
    if len(frames_with_hips):
        first = frames_with_hips[:ORIGIN_FRAMES]
        start = hip_centre[:, first][:, hips[first]].mean(axis=1)
    else:
        first = np.flatnonzero(present.any(axis=(1, 2)))[:ORIGIN_FRAMES]
        start = coords[:, first][:, present[first]].mean(axis=1)
    origin = start - (start @ up_vec - ground) * up_vec
    return basis, origin, up_vec


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _camera_rotation(pitch: float, pan: float, roll: float) -> np.ndarray:
    """World -> camera rotation (rows right, down, forward) for a camera panned by ``pan`` from +Y
    towards +X, pitched down by ``pitch`` and rolled by ``roll`` about its optical axis (radians)."""
    cp, sp = math.cos(pitch), math.sin(pitch)
    ca, sa = math.cos(pan), math.sin(pan)
    forward = np.array([sa * cp, ca * cp, -sp])
    right = np.array([ca, -sa, 0.0])
    down = np.array([-sa * sp, -ca * sp, -cp])  # forward x right
    if roll == 0.0:
        return np.stack([right, down, forward])
    cr, sr = math.cos(roll), math.sin(roll)
    return np.stack([cr * right + sr * down, -sr * right + cr * down, forward])


def sample_view(points3d: np.ndarray, rng: np.random.Generator, ranges: CameraRanges = CameraRanges(),
                up: str | np.ndarray = "camera") -> VirtualView:
    """Draw one virtual surveillance camera for a recording (module docstring for the method).

    Args:
        points3d: ``(L, M, 18, 3)`` metres, recording frame (x right, y down, z forward), all-zero
            rows missing (``SkeletonSequence.points3d``).
        rng: NumPy random generator (an int seeds a new one); two ``rng.random`` calls a view.
        ranges: the camera ranges.
        up: see :func:`world_frame`.

    Returns:
        The :class:`VirtualView`.

    Raises:
        ValueError: see :func:`world_frame`.
    """
    coords = _check(points3d)
    return _sample_view(coords, _present(coords), rng, ranges, up)


def _sample_view(coords: np.ndarray, present: np.ndarray, rng, ranges: CameraRanges, up) -> VirtualView:
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    basis, origin, up_vec = _world_frame(coords, present, up)
    world = basis @ (np.compress(present.reshape(-1), coords.reshape(3, -1), axis=1) - origin[:, None])  # (3, N)
    lo, hi = world.min(axis=1), world.max(axis=1)
    centre_xy = 0.5 * (lo[:2] + hi[:2])
    radius = math.sqrt(float(((world[0] - centre_xy[0]) ** 2 + (world[1] - centre_xy[1]) ** 2).max()))
    z_lo, z_hi = float(lo[2]), float(hi[2])

    def scale(unit, bounds):  # uniform [0, 1) draws -> [low, high)
        return bounds[0] + (bounds[1] - bounds[0]) * unit

    # one draw for the scalars (yaw, pitch/pan jitter, roll, free pitch) and one for the candidates
    scalars = rng.random(5)
    k = ranges.tries if ranges.aim else 1
    cand = rng.random((4, k))
    yaw = math.radians(scale(scalars[0], ranges.yaw_deg))
    turn = _rot_z(yaw)
    target = turn[:2, :2] @ centre_xy  # persons' centre after the turn (x, y)
    target_z = 0.5 * (z_lo + z_hi)

    height = scale(cand[0], ranges.height_m)
    distance = scale(cand[1], ranges.distance_m)
    hfov = np.radians(scale(cand[2], ranges.hfov_deg))
    n_sizes = len(ranges.image_sizes)
    sizes = np.asarray(ranges.image_sizes, dtype=np.float64)[np.minimum((cand[3] * n_sizes).astype(int), n_sizes - 1)]
    vfov = 2.0 * np.arctan(np.tan(0.5 * hfov) * sizes[:, 1] / sizes[:, 0])
    dx, dy = target[0], target[1] + distance  # camera at (0, -distance, height)
    rng_h = np.hypot(dx, dy)
    pan0 = np.arctan2(dx, dy)
    if ranges.aim:
        pitch0 = np.arctan2(height - target_z, rng_h)
        near = np.maximum(rng_h - radius, _MIN_RANGE_M)
        span_v = np.arctan2(height - z_lo, near) - np.arctan2(height - z_hi, near)
        span_h = 2.0 * np.arctan2(radius, near)
        p_lo, p_hi = np.radians(ranges.pitch_deg)
        violation = (np.maximum(p_lo - pitch0, 0.0) + np.maximum(pitch0 - p_hi, 0.0)
                     + np.maximum(span_v / vfov - ranges.max_fill, 0.0)
                     + np.maximum(span_h / hfov - ranges.max_fill, 0.0))
        ok = np.flatnonzero(violation <= 0.0)
        i = int(ok[0]) if len(ok) else int(np.argmin(violation))
        slack_v = max(0.5 * (vfov[i] - span_v[i]), 0.0)
        slack_h = max(0.5 * (hfov[i] - span_h[i]), 0.0)
        # tilt jitter: uniform over [aim - a * slack, aim + a * slack] intersected with the pitch range
        # (without this, a wide vertical field of view lets the axis reach the horizon)
        reach = ranges.aim_jitter * slack_v
        lo_t, hi_t = max(pitch0[i] - reach, p_lo), min(pitch0[i] + reach, p_hi)
        if lo_t > hi_t:  # aim line outside the range (no candidate fitted): nearest allowed tilt
            lo_t = hi_t = min(max(0.5 * (p_lo + p_hi), pitch0[i] - reach), pitch0[i] + reach)
        pitch = float(lo_t + scalars[1] * (hi_t - lo_t))
        pan = float(pan0[i] + (2.0 * scalars[2] - 1.0) * ranges.aim_jitter * slack_h)
    else:
        i = 0
        pitch = math.radians(scale(scalars[4], ranges.pitch_deg))
        pan = float(pan0[0])
    roll = math.radians(scale(scalars[3], ranges.roll_deg))

    width, img_h = int(sizes[i, 0]), int(sizes[i, 1])
    focal = 0.5 * width / math.tan(0.5 * hfov[i])
    cam_rot = _camera_rotation(pitch, pan, roll)
    centre = np.array([0.0, -distance[i], height[i]])
    world_rot = turn @ basis
    rotation = cam_rot @ world_rot
    translation = -rotation @ origin - cam_rot @ centre
    return VirtualView(
        rotation=rotation, translation=translation, focal_px=float(focal), frame_size=(width, img_h),
        world_rotation=world_rot, origin=origin, up=up_vec, camera_rotation=cam_rot, centre=centre,
        height_m=float(height[i]), distance_m=float(distance[i]), yaw_deg=math.degrees(yaw),
        pitch_deg=math.degrees(pitch), pan_deg=math.degrees(pan), roll_deg=math.degrees(roll),
        hfov_deg=math.degrees(hfov[i]),
    )


def project_virtual(points3d: np.ndarray, rng: np.random.Generator, ranges: CameraRanges = CameraRanges(),
                    up: str | np.ndarray = "camera") -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Project a recording through one random virtual surveillance camera.

    Args:
        points3d: ``(L, M, 18, 3)`` float metres in the recording camera's frame (x right, y down,
            z forward; ``SkeletonSequence.points3d``), all-zero rows for missing joints. All ``M``
            persons get the same rigid transform.
        rng: NumPy random generator (an int seeds a new one).
        ranges: the camera ranges (:class:`CameraRanges`).
        up: up direction of the recording, see :func:`world_frame`.

    Returns:
        ``(keypoints, depth, frame_size)``: keypoints ``(L, M, 18, 3)`` float32 ``u, v`` pixels
        (origin top left, y down) and score 1 for joints present, in front of the camera and inside
        the image, else an all-zero row; depth ``(L, M, 18)`` float32 metres, the virtual camera's
        ``z`` (0 where the score is 0); frame_size ``(W, H)`` ints. Use :func:`sample_view` and
        :meth:`VirtualView.project` to also get the camera.

    Raises:
        ValueError: on a wrong shape or a sequence without any present joint.
    """
    coords = _check(points3d)
    present = _present(coords)
    view = _sample_view(coords, present, rng, ranges, up)
    keypoints, depth = view._project(coords, present)
    return keypoints, depth, view.frame_size
