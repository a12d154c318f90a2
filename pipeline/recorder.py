"""Optional recording of the detector's output as JSON lines, for training on a site's own footage.

One object per processed camera frame, the format ``engines.datasets.generic`` reads
(``jsonl_to_npz`` turns a recording into the generic ``.npz`` training format)::

    {"camera": "cam0", "frame": 1234, "ts": 1700000000.123, "width": 1280, "height": 720,
     "persons": [[[x, y, score] x 18], ...], "track_ids": [3, 7]}

``x, y`` are original-frame pixels, COCO-18 order, score 0 = joint not detected; ``track_ids`` gives
the tracker's id of each person (-1 for a person that was not tracked).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class PoseRecorder:
    """Append-only JSON-lines writer (line-buffered, so a killed daemon loses at most one line).

    Raises:
        OSError: the file cannot be opened for appending (reported as a start-up error).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", buffering=1, encoding="utf-8")
        self.windows_path = self.path.with_name(self.path.stem + ".windows.jsonl")
        self._windows = None  # opened on the first window
        log.info("recording detector output to %s", self.path)

    def write(self, camera: str, frame: int, ts: float, frame_size: tuple[int, int],
              persons: np.ndarray, assignments: list[tuple[int, int]]) -> None:
        """Record one frame: ``persons`` ``(P, 18, 3)`` original pixels; ``assignments`` (track id, person index)."""
        ids = [-1] * len(persons)
        for track_id, idx in assignments:
            ids[idx] = int(track_id)
        line = {"camera": camera, "frame": int(frame), "ts": float(ts), "width": int(frame_size[0]),
                "height": int(frame_size[1]), "persons": np.round(persons, 2).tolist(), "track_ids": ids}
        self._fh.write(json.dumps(line, separators=(",", ":")) + "\n")

    def write_window(self, window, scores: np.ndarray | None = None) -> None:
        """Record which tracks and frames one window the stage built covers (``pipeline.windows.Window``).

        Written to the sibling file ``<path stem>.windows.jsonl``, one object a window::

            {"camera": "cam0", "track_ids": [3, 7], "start_frame": 100, "end_frame": 249,
             "valid_frames": 120, "joints": [14.0, 9.5], "scores": [0.91, 0.01, ...]}

        (``joints``: per person the median joints found, ``pipeline.windows.Window.joints``.)

        With the persons of the main file this rebuilds exactly the windows the daemon classified
        (``pipeline.recordings``): training data cut the way the deployed stage cuts it.

        Args:
            window: the window, as built by the stage.
            scores: ``(K,)`` float class probabilities the recogniser gave the window, in the model's
                label order, or ``None`` in record-only mode (then the key is absent). With them the
                event logic can be replayed at other thresholds (``pipeline.operating_curve``).
        """
        if self._windows is None:
            self._windows = open(self.windows_path, "a", buffering=1, encoding="utf-8")
        line = {"camera": window.camera, "track_ids": [int(t) for t in window.track_ids],
                "start_frame": int(window.start_frame), "end_frame": int(window.end_frame),
                "valid_frames": int(window.valid_frames)}
        if getattr(window, "joints", ()):
            line["joints"] = [round(float(j), 1) for j in window.joints]
        if scores is not None:
            line["scores"] = np.round(np.asarray(scores, dtype=np.float64).reshape(-1), 5).tolist()
        self._windows.write(json.dumps(line, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._fh.close()
        if self._windows is not None:
            self._windows.close()
