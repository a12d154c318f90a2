"""Events to an MQTT broker (paho-mqtt), at least once, with the journal as the source of truth.

Topics: ``<prefix>/<camera>/<label>`` (one message per event, the event's JSON, QoS 1, not
retained) and ``<prefix>/availability`` (``online`` retained on connect, ``offline`` as the
retained last will, and on a clean stop).

Delivery: every event is first in the journal (:class:`pipeline.journal.EventJournal`, its ``seq``);
:meth:`MqttSink.publish` sends it when the broker is connected. The broker's PUBACK moves the
*acknowledged watermark* (every ``seq`` up to it is acknowledged), persisted beside the journal in
``<journal>.mqtt.json``. On every (re)connect, and at start-up for what a previous run left
unacknowledged, the sink re-sends from the journal every event after the watermark that is not in
flight, in ``seq`` order, from its own thread with its own read-only journal connection. A broker
restart or outage therefore loses nothing; a subscriber may see an event twice (QoS 1 semantics:
``event_id`` + ``phase`` identify it). Events the journal could not store (no ``seq``) are sent
once, live, and not re-sent.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from pipeline.events import ActionEvent

log = logging.getLogger(__name__)


class MqttSink:
    """An MQTT publisher of events that re-sends from the journal what the broker did not acknowledge.

    Args:
        host, port: the broker.
        journal_path: the daemon's journal (sqlite), read for re-sends; the watermark file sits beside it.
        topic_prefix: first topic level.
        qos: 1 (at least once) or 2.
        client_id: MQTT client id (default ``sarde-<pid>``).
        keepalive_s: MQTT keep-alive, seconds.
        username, password: broker credentials, or None.
        reconnect_max_s: longest back-off between reconnect attempts, seconds.

    Raises:
        ImportError: paho-mqtt is not installed. ValueError: a bad ``qos``.
    """

    def __init__(self, host: str, port: int, journal_path: str | Path, topic_prefix: str = "sarde", qos: int = 1,
                 client_id: str | None = None, keepalive_s: int = 30, username: str | None = None,
                 password: str | None = None, reconnect_max_s: float = 30.0):
        import paho.mqtt.client as mqtt

        if qos not in (1, 2):
            raise ValueError(f"qos must be 1 or 2 for events that must not be lost, got {qos}")
        self.prefix, self.qos = topic_prefix.rstrip("/"), qos
        self.journal_path = Path(journal_path)
        self.mark_path = self.journal_path.with_name(self.journal_path.name + ".mqtt.json")
        self._lock = threading.Lock()
        self._mark_lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._sent: set[int] = set()          # seqs in flight or acknowledged above the watermark
        self._acked: set[int] = set()         # acknowledged seqs above the watermark
        self._early: set[int] = set()         # mids acknowledged before their send returned
        self.acked_upto = self._read_mark()
        self.connected = threading.Event()
        self._resend_wanted = threading.Event()
        self._stopping = threading.Event()
        self.published = self.acknowledged = self.resent = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"sarde-{os.getpid()}",
                                  clean_session=True)
        if username:
            self.client.username_pw_set(username, password)
        self.client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(1, int(max(1, reconnect_max_s)))
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.connect_async(host, int(port), keepalive=int(keepalive_s))
        self.client.loop_start()
        self._resender = threading.Thread(target=self._resend_loop, name="sarde-mqtt-resend", daemon=True)
        self._resender.start()
        self._resend_wanted.set()  # what a previous run left unacknowledged goes out on the first connect

    @property
    def availability_topic(self) -> str:
        return f"{self.prefix}/availability"

    def topic(self, event: ActionEvent) -> str:
        """``<prefix>/<camera>/<label>`` (camera ids and labels hold no ``/``, ``+`` or ``#``)."""
        return f"{self.prefix}/{event.camera}/{event.label}"

    # ------------------------------------------------------------------ watermark
    def _read_mark(self) -> int:
        try:
            return int(json.loads(self.mark_path.read_text(encoding="utf-8"))["acked_upto"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError, OSError) as exc:
            log.warning("mqtt: unreadable watermark %s (%s): every journal event is re-sent", self.mark_path, exc)
            return 0

    def _write_mark(self) -> None:
        with self._mark_lock:
            tmp = self.mark_path.with_name(self.mark_path.name + ".tmp")
            try:
                tmp.write_text(json.dumps({"acked_upto": self.acked_upto}), encoding="utf-8")
                os.replace(tmp, self.mark_path)
            except OSError as exc:
                log.warning("mqtt: cannot write the watermark %s: %s", self.mark_path, exc)

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt: broker refused the connection: %s", reason_code)
            return
        log.info("mqtt: connected; re-sending unacknowledged events after seq %d", self.acked_upto)
        client.publish(self.availability_topic, "online", qos=1, retain=True)
        with self._lock:  # what was in flight on the old connection is re-sent from the journal
            self._inflight.clear()
            self._sent = set(self._acked)
        self.connected.set()
        self._resend_wanted.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._stopping.is_set():
            log.warning("mqtt: disconnected from the broker (%s); reconnecting", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
            if seq is None:  # acknowledged before _send registered it (or not an event)
                self._early.add(mid)
                return
            moved = self._ack(seq)
        if moved:
            self._write_mark()

    def _ack(self, seq: int) -> bool:
        """Record ``seq`` as acknowledged (lock held); True when the watermark moved."""
        self.acknowledged += 1
        self._acked.add(seq)
        moved = False
        while self.acked_upto + 1 in self._acked:
            self.acked_upto += 1
            self._acked.discard(self.acked_upto)
            self._sent.discard(self.acked_upto)
            moved = True
        return moved

    # ------------------------------------------------------------------ sending
    def _send(self, seq: int | None, event: ActionEvent) -> bool:
        with self._lock:
            if seq is not None:
                if seq <= self.acked_upto or seq in self._sent:
                    return False
                self._sent.add(seq)  # reserved: neither the live path nor the re-send sends it twice
        # paho's own locks are taken in publish() and around on_publish: never call it under ours
        info = self.client.publish(self.topic(event), event.to_json(), qos=self.qos)
        moved = False
        with self._lock:
            if info.rc != 0:  # not connected: the journal keeps it for the next connect
                if seq is not None:
                    self._sent.discard(seq)
                return False
            self.published += 1
            if seq is not None:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    moved = self._ack(seq)
                else:
                    self._inflight[info.mid] = seq
        if moved:
            self._write_mark()
        return True

    def publish(self, seq: int | None, event: ActionEvent) -> None:
        """Send ``event`` (journal ``seq``, or None when the journal failed) if the broker is connected;
        otherwise it goes out with the next re-send. Never blocks, never raises for the broker's state."""
        if self.connected.is_set():
            self._send(seq, event)

    def _resend_loop(self) -> None:
        from pipeline.journal import EventJournal, JournalError

        while not self._stopping.is_set():
            if not self._resend_wanted.wait(0.5):
                continue
            self._resend_wanted.clear()
            if not self.connected.wait(0.5):
                self._resend_wanted.set()
                continue
            try:
                with EventJournal(self.journal_path, readonly=True) as journal:
                    for seq, event in journal.read(since_seq=self.acked_upto):
                        if self._stopping.is_set() or not self.connected.is_set():
                            self._resend_wanted.set()
                            break
                        if self._send(seq, event):
                            self.resent += 1
            except JournalError as exc:
                log.warning("mqtt: cannot read the journal for re-sending: %s", exc)

    def wait_acknowledged(self, seq: int, timeout_s: float) -> bool:
        """Block until every event up to journal ``seq`` is acknowledged (tests, clean stop)."""
        import time

        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.acked_upto >= seq:
                return True
            time.sleep(0.05)
        return self.acked_upto >= seq

    def close(self, timeout_s: float = 2.0) -> None:
        """Publish ``offline`` (retained), give in-flight messages ``timeout_s`` to be acknowledged,
        disconnect and persist the watermark."""
        import time

        self._stopping.set()
        if self.connected.is_set():
            self.client.publish(self.availability_topic, "offline", qos=1, retain=True)
            end = time.monotonic() + timeout_s
            while self._inflight and time.monotonic() < end:
                time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()
        self._resender.join(timeout=2.0)
        self._write_mark()
