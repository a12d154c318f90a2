"""Durable event journal: an append-only sqlite3 table of :class:`pipeline.events.ActionEvent`.

The stage appends every event here *before* publishing it, so a subscriber that was not connected
can catch up (``sarde events --journal PATH``) from the last sequence number it saw. sqlite runs in
WAL mode with ``synchronous=FULL``: an event whose :meth:`EventJournal.append` returned survives a
crash or power loss, and readers in other processes never block the writer.

Table ``events``: ``seq`` (INTEGER PRIMARY KEY AUTOINCREMENT, strictly increasing, never reused),
``event_id``, ``phase``, ``camera``, ``label`` (TEXT), ``emitted_ts`` (REAL, Unix s), ``json``
(the event's :meth:`~pipeline.events.ActionEvent.to_json`). ``PRAGMA user_version`` holds the
journal format version.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Iterator

from pipeline.events import ActionEvent, EventSchemaError
from engines.errors import UserError

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
_APPLICATION_ID = 0x53524445  # "SRDE", marks the file as a sarde journal

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    camera TEXT NOT NULL,
    label TEXT NOT NULL,
    emitted_ts REAL NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_camera_seq ON events (camera, seq);
CREATE INDEX IF NOT EXISTS events_event_id ON events (event_id);
CREATE INDEX IF NOT EXISTS events_emitted_ts ON events (emitted_ts);
"""


class JournalError(UserError, RuntimeError):
    """The journal cannot be opened, read or written (missing, corrupt, not a journal, I/O error)."""


class EventJournal:
    """Append-only, crash-safe store of events in one sqlite3 file.

    Args:
        path: journal file; created (with parent directories) unless ``readonly``.
        readonly: open an existing journal read-only (safe while another process writes it).
        timeout_s: how long to wait for a lock held by another connection, seconds.

    Raises:
        JournalError: if the file is missing (read-only), not a sqlite database, not a sarde
            journal, of another journal version, or cannot be written.

    One instance is used from one thread (sqlite3's default check).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, timeout_s: float = 5.0):
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                if not self.path.is_file():
                    raise JournalError(f"journal {self.path} does not exist")
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                           timeout=timeout_s, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        try:
            self._setup()
        except (sqlite3.Error, JournalError) as exc:
            self._db.close()
            if isinstance(exc, JournalError):
                raise
            raise JournalError(f"journal {self.path} is unreadable or not a sqlite database: {exc}") from exc

    def _setup(self) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id == 0 and not tables and not self.readonly:  # a new, empty file
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise JournalError(f"journal {self.path}: cannot enable WAL mode (got {mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA_SQL)
            db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {JOURNAL_VERSION}")
            return
        if app_id != _APPLICATION_ID or "events" not in tables:
            raise JournalError(f"{self.path} is a sqlite database but not a sarde event journal")
        if version != JOURNAL_VERSION:
            raise JournalError(f"journal {self.path} has version {version}, this code reads {JOURNAL_VERSION}")
        if not self.readonly:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA_SQL)  # additive: indexes a journal written by an older build lacks

    def append(self, event: ActionEvent) -> int:
        """Store one event durably (committed and synced on return); returns its ``seq``.

        Raises:
            JournalError: if the journal is read-only or the write fails (disk full, I/O error).
        """
        if self.readonly:
            raise JournalError(f"journal {self.path} is open read-only")
        try:
            cur = self._db.execute(
                "INSERT INTO events (event_id, phase, camera, label, emitted_ts, json) VALUES (?, ?, ?, ?, ?, ?)",
                (event.event_id, event.phase, event.camera, event.label, event.emitted_ts, event.to_json()))
        except sqlite3.Error as exc:
            raise JournalError(f"cannot append to journal {self.path}: {exc}") from exc
        return int(cur.lastrowid)

    def read(self, since_seq: int = 0, camera: str | None = None, limit: int | None = None,
             batch: int = 500) -> Iterator[tuple[int, ActionEvent]]:
        """Events with ``seq > since_seq`` in ``seq`` order (pass the last seq seen to catch up).

        Args:
            since_seq: exclusive lower bound of ``seq``.
            camera: only this camera's events.
            limit: at most this many events.
            batch: rows fetched per query (memory bound).

        Yields:
            ``(seq, event)``.

        Raises:
            JournalError: on a read error or a stored row that is not a valid event.
        """
        remaining = limit
        last = int(since_seq)
        while remaining is None or remaining > 0:
            n = batch if remaining is None else min(batch, remaining)
            sql = "SELECT seq, json FROM events WHERE seq > ?"
            args: list = [last]
            if camera is not None:
                sql += " AND camera = ?"
                args.append(camera)
            sql += " ORDER BY seq LIMIT ?"
            args.append(n)
            try:
                rows = self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
            for seq, text in rows:
                try:
                    event = ActionEvent.from_json(text)
                except EventSchemaError as exc:
                    raise JournalError(f"journal {self.path}: row {seq} is not a valid event: {exc}") from exc
                yield int(seq), event
            if len(rows) < n:
                return
            last = int(rows[-1][0])
            if remaining is not None:
                remaining -= len(rows)

    def recent(self, limit: int = 50, camera: str | None = None, label: str | None = None,
               phase: str | None = None) -> list[tuple[int, ActionEvent]]:
        """The newest ``limit`` events matching every filter given (None: any), newest first, as
        ``(seq, event)``. Raises :class:`JournalError` on a read error or an invalid stored row."""
        sql, args = "SELECT seq, json FROM events", []
        conds = [(col, val) for col, val in (("camera", camera), ("label", label), ("phase", phase)) if val is not None]
        if conds:
            sql += " WHERE " + " AND ".join(f"{col} = ?" for col, _ in conds)
            args += [val for _, val in conds]
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(int(limit))
        try:
            rows = self._db.execute(sql, args).fetchall()
            return [(int(seq), ActionEvent.from_json(text)) for seq, text in rows]
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        except EventSchemaError as exc:
            raise JournalError(f"journal {self.path}: a stored row is not a valid event: {exc}") from exc

    def distinct(self, column: str) -> list[str]:
        """The sorted distinct values of ``column`` (``camera``, ``label`` or ``phase``) over the
        stored events. Raises ValueError for another column, :class:`JournalError` on a read error."""
        if column not in ("camera", "label", "phase"):
            raise ValueError(f"no distinct values of {column!r}: use camera, label or phase")
        try:
            return [r[0] for r in self._db.execute(f"SELECT DISTINCT {column} FROM events ORDER BY {column}")]
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc

    def open_actions(self) -> list[tuple[ActionEvent, ActionEvent]]:
        """Actions with no ``end`` event (their stage died: ``kill -9``, power loss), oldest first.

        Returns:
            ``[(first, last)]``: the first and the last stored event of each such ``event_id``.

        Raises:
            JournalError: on a read error or a stored row that is not a valid event.
        """
        sql = ("SELECT f.json, l.json FROM (SELECT event_id, MIN(seq) AS first, MAX(seq) AS last FROM events "
               "GROUP BY event_id HAVING SUM(phase = 'end') = 0) o "
               "JOIN events f ON f.seq = o.first JOIN events l ON l.seq = o.last ORDER BY o.first")
        try:
            rows = self._db.execute(sql).fetchall()
            return [(ActionEvent.from_json(a), ActionEvent.from_json(b)) for a, b in rows]
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        except EventSchemaError as exc:
            raise JournalError(f"journal {self.path}: a stored row is not a valid event: {exc}") from exc

    def prune(self, max_age_s: float | None = None, max_events: int | None = None,
              now: float | None = None) -> int:
        """Retention: delete events older than ``max_age_s`` (by ``emitted_ts``, Unix s) and all but the
        newest ``max_events``; returns how many rows were deleted.

        ``seq`` stays strictly increasing afterwards (AUTOINCREMENT never reuses numbers), so a
        subscriber catching up from a pruned ``seq`` simply gets the oldest event still kept.

        Raises:
            JournalError: if the journal is read-only or the delete fails.
        """
        if self.readonly:
            raise JournalError(f"journal {self.path} is open read-only")
        deleted = 0
        try:
            if max_age_s is not None:
                cutoff = (time.time() if now is None else now) - float(max_age_s)
                deleted += self._db.execute("DELETE FROM events WHERE emitted_ts < ?", (cutoff,)).rowcount
            if max_events is not None:
                deleted += self._db.execute(
                    "DELETE FROM events WHERE seq <= (SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (int(max_events),)).rowcount
        except sqlite3.Error as exc:
            raise JournalError(f"cannot prune journal {self.path}: {exc}") from exc
        return deleted

    def last_seq(self) -> int:
        """Highest ``seq`` stored, 0 when empty."""
        try:
            row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        return int(row[0] or 0)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._db.close()

    def __enter__(self) -> "EventJournal":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
