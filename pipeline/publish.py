"""Event output over ZeroMQ PUB/SUB, journal first.

Wire format: two-frame messages ``[topic, json]``, both UTF-8. ``topic = <prefix>.<camera>.<label>``
(``<camera>.<label>`` for an empty prefix); ``json`` is :meth:`pipeline.events.ActionEvent.to_json`.
ZeroMQ filters subscriptions by byte prefix, so ``sarde.cam1`` would also match ``sarde.cam10``:
subscribe to ``sarde.cam1.`` (with the trailing dot) for exactly one camera.

PUB never blocks: with no subscriber or a slow one, messages are dropped (beyond ``sndhwm`` per
subscriber). The journal, written before each send, is where nothing is lost.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterator

import zmq

from pipeline.events import ActionEvent, EventSchemaError
from pipeline.journal import EventJournal

log = logging.getLogger(__name__)

#: Largest accepted event message (topic + JSON), bytes; bigger ones are dropped by libzmq.
MAX_MESSAGE_BYTES = 1 << 20


def event_topic(prefix: str, camera: str, label: str) -> str:
    """``<prefix>.<camera>.<label>``, or ``<camera>.<label>`` when ``prefix`` is empty."""
    return f"{prefix}.{camera}.{label}" if prefix else f"{camera}.{label}"


class EventPublisher:
    """Binds a PUB socket and publishes events, appending each to the journal first.

    Args:
        endpoint: ZeroMQ endpoint to bind, e.g. ``tcp://127.0.0.1:5560``; ``tcp://127.0.0.1:*`` picks
            a free port (see :attr:`endpoint`).
        topic_prefix: first topic component.
        journal: durable journal, or ``None`` for publish-only.
        sndhwm: messages queued per subscriber before PUB drops (HWM).
        context: ZeroMQ context (default: the process-wide instance).
        curve_keypair: ``(public, secret)`` Z85 keys: the socket is a CURVE server
            (:mod:`pipeline.curve`; the context's authenticator admits the subscribers).

    Attributes:
        endpoint: the bound endpoint (``LAST_ENDPOINT``, with the real port).
        published: messages handed to the socket.
        publish_failed: messages the socket refused (``zmq.Again`` / errors); they are in the journal.

    Raises:
        zmq.ZMQError: if the endpoint cannot be bound.
    """

    def __init__(self, endpoint: str, topic_prefix: str = "sarde", journal: EventJournal | None = None,
                 sndhwm: int = 10000, *, context: zmq.Context | None = None,
                 curve_keypair: tuple[bytes, bytes] | None = None):
        self.topic_prefix = topic_prefix
        self.journal = journal
        self.published = 0
        self.publish_failed = 0
        self._lock = threading.Lock()
        ctx = context or zmq.Context.instance()
        self._sock = ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        if curve_keypair is not None:
            from pipeline.curve import make_server
            make_server(self._sock, curve_keypair)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError:
            self._sock.close(linger=0)
            raise
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("publishing events on %s (topic prefix %r)", self.endpoint, topic_prefix)

    def publish(self, event: ActionEvent) -> int | None:
        """Journal (durably) then send one event without blocking.

        Returns:
            The journal ``seq``, or ``None`` without a journal.

        Raises:
            pipeline.journal.JournalError: if the journal write fails (the event is then not sent).
        """
        with self._lock:
            seq = self.journal.append(event) if self.journal is not None else None
            self._send(event)
            return seq

    def send_only(self, event: ActionEvent) -> bool:
        """Send without journaling (used when the journal failed); returns whether it was sent."""
        with self._lock:
            return self._send(event)

    def _send(self, event: ActionEvent) -> bool:
        topic = event_topic(self.topic_prefix, event.camera, event.label)
        try:
            self._sock.send_multipart([topic.encode(), event.to_json().encode()], flags=zmq.NOBLOCK)
            self.published += 1
            return True
        except zmq.ZMQError as exc:  # zmq.Again included
            self.publish_failed += 1
            if self.publish_failed == 1 or self.publish_failed % 1000 == 0:
                log.warning("event publish failed (%d so far, journal keeps them): %s", self.publish_failed, exc)
            return False

    def close(self) -> None:
        """Close the socket with linger 0 (the journal is the caller's to close)."""
        self._sock.close(linger=0)

    def __enter__(self) -> "EventPublisher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class EventSubscriber:
    """SUB side: connects, filters by topic prefix and yields validated events.

    Args:
        endpoint: the publisher's endpoint.
        topic_prefix: byte-prefix subscription ("" = everything).
        context: ZeroMQ context (default: the process-wide instance).
        curve: ``(server public key, (public, secret))`` Z85 keys to connect as a CURVE client.

    Attributes:
        received: valid events yielded; malformed: messages skipped (logged, rate-limited).
    """

    def __init__(self, endpoint: str, topic_prefix: str = "", *, context: zmq.Context | None = None,
                 curve: tuple[bytes, tuple[bytes, bytes]] | None = None):
        ctx = context or zmq.Context.instance()
        self._sock = ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self._sock.setsockopt(zmq.SUBSCRIBE, topic_prefix.encode())
        if curve is not None:
            from pipeline.curve import make_client
            make_client(self._sock, curve[0], curve[1])
        self._sock.connect(endpoint)
        self.endpoint = endpoint
        self.received = 0
        self.malformed = 0

    def events(self, timeout_s: float | None = None, stop: threading.Event | None = None,
               poll_s: float = 0.1) -> Iterator[ActionEvent]:
        """Yield events as they arrive.

        Args:
            timeout_s: end after this many seconds without a (valid or malformed) message; ``None``
                waits forever.
            stop: end when set (checked every ``poll_s``).
            poll_s: poll interval, seconds.
        """
        idle_since = time.monotonic()
        while stop is None or not stop.is_set():
            if timeout_s is not None:
                remaining = timeout_s - (time.monotonic() - idle_since)
                if remaining <= 0:
                    return
                wait = min(poll_s, remaining)
            else:
                wait = poll_s
            if not self._sock.poll(int(wait * 1000), zmq.POLLIN):
                continue
            frames = self._sock.recv_multipart()
            idle_since = time.monotonic()
            event = self._decode(frames)
            if event is not None:
                self.received += 1
                yield event

    def _decode(self, frames: list[bytes]) -> ActionEvent | None:
        reason = None
        event = None
        if len(frames) != 2:
            reason = f"{len(frames)} frames, expected 2"
        else:
            try:
                event = ActionEvent.from_json(frames[1])
            except EventSchemaError as exc:
                reason = str(exc)
        if reason is None:
            return event
        self.malformed += 1
        if self.malformed <= 10 or self.malformed % 1000 == 0:
            log.warning("skipping malformed event message from %s (%d so far): %s", self.endpoint, self.malformed, reason)
        return None

    def close(self) -> None:
        """Close the socket with linger 0."""
        self._sock.close(linger=0)


def subscribe(endpoint: str, topic_prefix: str = "", timeout_s: float | None = None,
              stop: threading.Event | None = None, *, context: zmq.Context | None = None,
              curve: tuple[bytes, tuple[bytes, bytes]] | None = None) -> Iterator[ActionEvent]:
    """Yield the events published on ``endpoint`` whose topic starts with ``topic_prefix``.

    Malformed messages are skipped with a logged warning. Ends after ``timeout_s`` seconds without
    a message (``None``: never) or when ``stop`` is set; the socket is closed when the generator
    ends or is closed. ``curve``: ``(server public key, (public, secret))`` to subscribe as a CURVE client.
    """
    sub = EventSubscriber(endpoint, topic_prefix, context=context, curve=curve)
    try:
        yield from sub.events(timeout_s=timeout_s, stop=stop)
    finally:
        sub.close()
