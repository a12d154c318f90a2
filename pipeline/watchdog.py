"""Reader supervision: the daemon's watchdog over its reader processes (called between stage batches).

* A **live** reader (RTSP/HTTP/RTMP/... URL, USB device) or a **looping** file reader that dies (any
  exit, ``kill -9`` included) is restarted with exponential backoff (``RESTART_BACKOFF_S`` doubling
  up to ``RESTART_BACKOFF_MAX_S``; reset after ``RESTART_RESET_S`` of healthy running) and counted in
  ``sarde_reader_restarts_total{camera}``. The new reader starts at ``seq`` 0, so the stage closes the
  old tracks of that camera and starts afresh.
* A **file** reader is never restarted (a restart would send the file's frames twice). If it failed,
  its camera is ended at once; if it exited cleanly but its ``eos`` never reached the stage, the
  camera is ended after ``EOS_GRACE_S`` (so ``end_when_all_eos`` still fires).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import time
from typing import Callable

from pipeline.reader_settings import ReaderSettings

log = logging.getLogger(__name__)

#: seconds a cleanly exited file reader's end of stream may take to arrive before its camera is ended.
EOS_GRACE_S = 10.0
#: first restart delay of a dead live reader, seconds; doubles per consecutive restart ...
RESTART_BACKOFF_S = 1.0
#: ... up to this, seconds.
RESTART_BACKOFF_MAX_S = 30.0
#: a restarted reader alive this long resets the backoff, seconds.
RESTART_RESET_S = 60.0


class ReaderWatchdog:
    """Restart dead live readers, end the cameras of dead file readers.

    Args:
        settings: one :class:`ReaderSettings` per source, in the order of ``procs``.
        procs: the running reader processes (:func:`pipeline.daemon.start_readers`); replaced in
            place when a reader is restarted, so a caller holding the list stops the new ones.
        start: ``start(settings) -> started process`` (the daemon's spawn of one reader).
        end_camera: ``end_camera(name)``: end a camera after the batch in flight (the stage's
            :meth:`~pipeline.stage.Stage.end_camera_by_name`).
        camera_ended: ``camera_ended(name) -> bool``.
        restarts: ``restarts(camera)``: count one restart (a Prometheus counter's ``labels(c).inc``).
        clock: monotonic seconds.
    """

    def __init__(self, settings: list[ReaderSettings], procs: list, start: Callable[[ReaderSettings], mp.Process],
                 end_camera: Callable[[str], None], camera_ended: Callable[[str], bool],
                 restarts: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self.settings, self.procs = settings, procs
        self._start, self._end_camera, self._camera_ended, self._restarts = start, end_camera, camera_ended, restarts
        self._clock = clock
        self._exited: dict[int, float] = {}      # source index -> when its (file) reader was seen dead
        self._due: dict[int, float] = {}         # source index -> when a dead live reader is restarted
        self._backoff = [RESTART_BACKOFF_S] * len(settings)
        self._started = [clock()] * len(settings)
        self._removed: set[int] = set()          # source indices removed by a config reload

    @staticmethod
    def restartable(s: ReaderSettings) -> bool:
        """Live sources and looping files are restarted; a file read once is not."""
        return s.source_kind != "file" or bool(s.loop)

    def add(self, settings: ReaderSettings, proc) -> None:
        """Supervise one more reader (a source added by a config reload)."""
        self.settings.append(settings)
        self.procs.append(proc)
        self._backoff.append(RESTART_BACKOFF_S)
        self._started.append(self._clock())

    def remove(self, camera: str):
        """Stop supervising ``camera``'s reader (a source removed by a config reload) and return its
        process (to be stopped by the caller), or None for an unknown camera."""
        for i, s in enumerate(self.settings):
            if s.camera == camera and i not in self._removed:
                self._removed.add(i)
                self._due.pop(i, None)
                return self.procs[i]
        return None

    def check(self) -> None:
        """One supervision pass (cheap: ``is_alive`` per reader)."""
        now = self._clock()
        for i, (s, p) in enumerate(zip(self.settings, self.procs)):
            if i in self._removed:
                continue
            if p.is_alive():
                if now - self._started[i] > RESTART_RESET_S:
                    self._backoff[i] = RESTART_BACKOFF_S
                continue
            if self.restartable(s):
                self._restart_when_due(i, s, p, now)
            else:
                self._end_file_camera(i, s, p, now)

    def _restart_when_due(self, i: int, s: ReaderSettings, p, now: float) -> None:
        if i not in self._due:
            self._due[i] = now + self._backoff[i]
            log.error("reader for camera %s died (exit code %s); restarting it in %.0f s", s.camera, p.exitcode,
                      self._backoff[i])
            return
        if now < self._due[i]:
            return
        del self._due[i]
        self._backoff[i] = min(self._backoff[i] * 2, RESTART_BACKOFF_MAX_S)
        self.procs[i] = self._start(s)
        self._started[i] = now
        self._restarts(s.camera)
        log.warning("reader for camera %s restarted", s.camera)

    def _end_file_camera(self, i: int, s: ReaderSettings, p, now: float) -> None:
        if i not in self._exited:
            self._exited[i] = now
            if p.exitcode != 0:
                log.error("reader for camera %s exited with code %s", s.camera, p.exitcode)
                self._end_camera(s.camera)
        elif p.exitcode == 0 and not self._camera_ended(s.camera) and now - self._exited[i] > EOS_GRACE_S:
            log.warning("camera %s: reader exited cleanly %.0f s ago but its end of stream never arrived; ending it",
                        s.camera, now - self._exited[i])
            self._exited[i] = float("inf")
            self._end_camera(s.camera)
