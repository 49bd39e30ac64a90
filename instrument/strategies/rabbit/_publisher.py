"""The kombu side of the rabbit strategy: connect, declare, publish a batch, confirm.

Imported only by :mod:`instrument.strategies.rabbit` inside its methods, so that
``import instrument.strategies.rabbit`` works without kombu.

Decisions:

* **One kombu Connection per URL, failover by hand.** ``connect()`` tries the URLs in
  order, starting with the one that worked last, each once with ``connect_timeout``,
  and says for every host why it failed. kombu's own alternates would retry with its
  own sleeps (``Connection.connect()`` sleeps 2 s after a refused connection).
* **Pipelined publisher confirms** on AMQP 0-9-1: the channel is put in confirm mode,
  the whole batch is written, then acks are drained until *every* delivery tag of the
  batch is confirmed: the outstanding tags are a set, an ack removes its tag (all tags
  up to it when ``multiple``). Confirms of messages routed to different queues arrive
  out of order, so "the highest tag was acked" proves nothing about lower tags. One
  round trip per batch instead of one per message (kombu's ``confirm_publish``). Any
  nack (single or ``multiple``) or a timeout fails the whole batch; the engine resends
  it (duplicates possible, never losses).
* **The batch's frames are encoded here** (:func:`publish_frames`, ~3 us a message)
  and written with one ``sendall``: py-amqp spends ~25 us and a syscall per message,
  which capped a batch at py-amqp's speed. py-amqp still owns the connection: the
  handshake, declarations, confirm mode, heartbeats and reading the acks. The raw path
  uses py-amqp internals (``transport.write``, ``frame_max``, ``bytes_sent``); they
  are checked at connect, and when one is missing the public ``basic_publish`` is
  used instead (slower, same wire format), logged once. ``Channel.events`` (how acks
  reach us on either path) is required: without it connect() fails and says so,
  rather than publishing unconfirmed.
* **Nothing waits forever on a broker that stops reading** (memory or disk alarm,
  half-open TCP): the socket gets a write timeout (``rabbit_confirm_timeout``) and a
  read timeout (``rabbit_connect_timeout``), and after a failed attempt the connection
  is dropped with ``collect()`` (no network I/O) instead of a close handshake that
  would wait for a ``Close-Ok`` that never comes.
* **Other kombu transports** (``memory://``, ``filesystem://``, ``redis://``) have no
  confirms: a publish that returned is taken as delivered.
* **Declared on every new connection**: the topic exchange and the queues
  ``<topic>.info|warn|error`` bound with their own names as keys, so nothing is dropped
  before a consumer starts. Durability of all three follows ``rabbit_durable_queues``;
  messages are persistent (delivery mode 2) when it is set.
* **Errors are explained**, not passed through (:func:`explain`): refused, timeout,
  authentication, unknown vhost, TLS, and PRECONDITION_FAILED (what exists vs what we
  declare). Passwords are scrubbed from every message.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from ...events import Notification
from ...exceptions import DeliveryError, StrategyError
from .._broker import declare_glance, mask_url
from ._config import RabbitTarget

__all__ = ["RabbitPublisher", "explain", "publish_frames"]

log = logging.getLogger("instrument.strategies.rabbit")

# kombu's and py-amqp's annotations are partial; we use them as untyped libraries.
kombu: Any = importlib.import_module("kombu")
amqp_errors: Any = importlib.import_module("amqp.exceptions")

# py-amqp internals the raw-frame path needs (see the module docstring).
_RAW_NEEDS: Final = ("transport.write", "frame_max", "bytes_sent")
_fallback_logged: list[bool] = []


class RabbitPublisher:
    """Implements :class:`instrument.delivery.Publisher` with kombu."""

    def __init__(self, target: RabbitTarget) -> None:
        self.target = target
        self._index = 0
        self._conn: Any = None
        self._channel: Any = None
        self._confirms = False
        self._raw = False  # write frames ourselves (py-amqp internals present)
        self._published = 0  # delivery tag of the last message published on the channel
        self._outstanding: set[int] = set()  # delivery tags not confirmed yet
        self._nacked = False

    # ------------------------------------------------------------ Publisher

    def connect(self) -> None:
        reasons = []
        urls = self.target.urls
        for step in range(len(urls)):
            index = (self._index + step) % len(urls)
            try:
                self._open(urls[index])
            except Exception as exc:
                self.close()
                reasons.append(f"{mask_url(urls[index])}: {explain(exc, self.target, urls[index])}")
                continue
            self._index = index
            return
        raise StrategyError("; ".join(reasons))

    def publish_batch(self, batch: Sequence[Notification]) -> None:
        try:
            if self._confirms:
                self._outstanding.clear()
                self._nacked = False
                if self._raw:
                    self._publish_frames(batch)
                else:
                    for notification in batch:
                        self._publish(notification)
                self._wait_confirms()
            else:
                for notification in batch:
                    self._publish(notification)
        except StrategyError:
            raise
        except Exception as exc:
            url = self.target.urls[self._index]
            raise DeliveryError(f"{mask_url(url)}: {explain(exc, self.target, url)}") from exc

    def idle(self) -> None:
        if self._conn is None or not self.target.heartbeat or not self._confirms:
            return
        self._conn.heartbeat_check()
        with contextlib.suppress(TimeoutError):
            self._conn.drain_events(timeout=0.001)

    def close(self) -> None:
        """Drop the connection without a close handshake (no network I/O, never waits).

        Called after a failed attempt (the broker may not read any more: a graceful
        ``close()`` would wait for its ``Close-Ok`` without a timeout) and by
        ``check()``. The broker sees the socket close and cleans up.
        """
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                # A TLS socket's close() exchanges close_notify: make it fail at once.
                conn.connection.transport.sock.settimeout(0)
            with contextlib.suppress(Exception):
                conn.collect()

    # ------------------------------------------------------------ internals

    def _open(self, url: str) -> None:
        target = self.target
        conn = kombu.Connection(
            url,
            ssl=target.ssl_options(url),
            heartbeat=target.heartbeat,
            connect_timeout=target.connect_timeout,
            transport_options={
                "confirm_publish": False,
                # socket-level (SO_RCVTIMEO/SO_SNDTIMEO): blocking reads and writes end
                "read_timeout": target.connect_timeout,
                "write_timeout": target.confirm_timeout,
            },
        )
        self._conn = conn
        conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        self._channel = conn.channel()
        self._confirms = hasattr(self._channel, "confirm_select")
        if self._confirms:
            self._channel.confirm_select()
            self._published = 0
            self._outstanding.clear()
            self._nacked = False
            if not isinstance(getattr(self._channel, "events", None), dict):
                raise StrategyError(
                    "this py-amqp has no Channel.events: publisher confirms cannot be read "
                    "(install the py-amqp version kombu requires)"
                )
            self._raw = _raw_possible(conn.connection)
            self._channel.events["basic_ack"].add(self._on_ack)
            self._channel.events["basic_nack"].add(self._on_nack)
        declare_glance(kombu, self._channel, target.exchange, target.topic, target.durable)

    def _publish(self, notification: Notification) -> None:
        target = self.target
        message = self._channel.prepare_message(
            target.encode(notification),
            content_type="application/json",
            content_encoding="utf-8",
            properties={
                "delivery_mode": 2 if target.durable else 1,
                "message_id": notification.message_id,
            },
        )
        routing_key = f"{target.topic}.{notification.priority.lower()}"
        self._channel.basic_publish(message, exchange=target.exchange, routing_key=routing_key)
        if self._confirms:
            self._published += 1
            self._outstanding.add(self._published)

    def _publish_frames(self, batch: Sequence[Notification]) -> None:
        """Encode the batch's AMQP frames ourselves and write them with one ``sendall``.

        py-amqp builds each message in ~25 us of Python and writes it with its own
        syscall (one TCP packet each, TCP_NODELAY); this is most of the cost of a
        batch. The frames of ``basic.publish`` are fixed by AMQP 0-9-1, see
        :func:`publish_frames`; acks are still read by py-amqp on the same connection.
        """
        amqp_conn = self._conn.connection
        channel_id = self._channel.channel_id
        target = self.target
        mode = 2 if target.durable else 1
        frames = [
            publish_frames(
                channel_id,
                target.exchange,
                f"{target.topic}.{notification.priority.lower()}",
                target.encode(notification).encode("utf-8"),
                notification.message_id,
                mode,
                amqp_conn.frame_max,
            )
            for notification in batch
        ]
        first = self._published + 1
        self._published += len(batch)
        self._outstanding.update(range(first, self._published + 1))
        amqp_conn.transport.write(b"".join(frames))
        amqp_conn.bytes_sent += 1  # heartbeat_check() must see that we talked

    def _wait_confirms(self) -> None:
        """Drain until every delivery tag of the batch is acked; raise on any nack."""
        deadline = time.monotonic() + self.target.confirm_timeout
        while self._outstanding and not self._nacked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeliveryError(
                    f"the broker did not confirm {len(self._outstanding)} messages "
                    f"within {self.target.confirm_timeout:g} s"
                )
            try:
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if self._nacked:
            raise DeliveryError("the broker refused (nacked) messages of the batch")

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._outstanding = {tag for tag in self._outstanding if tag > delivery_tag}
        else:
            self._outstanding.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked = True


def _raw_possible(amqp_conn: Any) -> bool:
    """Whether py-amqp still has the internals :meth:`_publish_frames` writes through."""
    missing = [name for name in _RAW_NEEDS if _lookup(amqp_conn, name) is None]
    if not missing:
        return True
    if not _fallback_logged:
        _fallback_logged.append(True)
        log.warning(
            "rabbit: py-amqp lacks %s; publishing through basic_publish instead (correct, slower)",
            ", ".join(missing),
        )
    return False


def _lookup(obj: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


_PUBLISH_METHOD: Final = struct.pack(">HHH", 60, 40, 0)  # basic.publish, reserved-1
_PROPERTY_FLAGS: Final = 0x8000 | 0x4000 | 0x1000 | 0x0080  # type, encoding, mode, id
_CONTENT_TYPE: Final = b"\x10application/json\x05utf-8"
_FRAME_END: Final = b"\xce"


def _shortstr(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {text[:40]!r}...")
    return bytes((len(data),)) + data


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + _FRAME_END


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    message_id: str,
    delivery_mode: int,
    frame_max: int,
) -> bytes:
    """The three (or more) frames of one ``basic.publish`` (AMQP 0-9-1, 4.2.3 and 4.2.6).

    Method (exchange, routing key, not mandatory, not immediate), content header with
    content type, content encoding, delivery mode and message id, then the body cut
    into frames of at most ``frame_max - 8`` bytes.
    """
    method = _PUBLISH_METHOD + _shortstr(exchange) + _shortstr(routing_key) + b"\x00"
    header = (
        struct.pack(">HHQH", 60, 0, len(body), _PROPERTY_FLAGS)
        + _CONTENT_TYPE
        + bytes((delivery_mode,))
        + _shortstr(message_id)
    )
    parts = [_frame(1, channel, method), _frame(2, channel, header)]
    chunk = frame_max - 8 if frame_max else len(body) or 1
    parts.extend(_frame(3, channel, body[i : i + chunk]) for i in range(0, len(body), chunk))
    return b"".join(parts)


def explain(exc: BaseException, target: RabbitTarget, url: str) -> str:
    """Say what is wrong, for an operator, with no password in it."""
    return target.scrub(_explain(exc, target, url))


def _explain(exc: BaseException, target: RabbitTarget, url: str) -> str:
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or ''}".rstrip(":")
    if isinstance(exc, amqp_errors.PreconditionFailed):
        return _precondition(exc, target)
    if isinstance(exc, amqp_errors.AccessRefused):
        if getattr(exc, "method_sig", None) == (0, 0) or "Login was refused" in str(exc):
            user = parts.username or target.userid
            return f"authentication failed for user {user!r} (check the user id and password)"
        return f"access refused: {getattr(exc, 'reply_text', exc)}"
    if isinstance(exc, amqp_errors.NotAllowed):
        vhost = target.vhost_of(url)
        return (
            f"virtual host {vhost!r} does not exist or the user may not use it "
            f"({getattr(exc, 'reply_text', exc)})"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where} (is RabbitMQ running and listening there?)"
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake with {where} failed: {exc.reason or exc} (check the CA/cert/key files)"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {parts.hostname!r}: {exc.strerror}"
    if isinstance(exc, BlockingIOError):  # SO_SNDTIMEO/SO_RCVTIMEO of a blocking socket
        return (
            f"{where} stopped reading or answering (socket timeout; a memory or disk alarm "
            f"blocks publishers, or the connection is half-open): {exc}"
        )
    if isinstance(exc, TimeoutError):
        return f"timed out after {target.connect_timeout:g} s talking to {where}"
    if isinstance(exc, OSError) and "unexpectedly closed" in str(exc) and parts.port:
        return f"{where} closed the connection during the handshake ({exc}); TLS port without TLS?"
    if isinstance(exc, amqp_errors.AMQPError):
        return f"broker error {getattr(exc, 'reply_code', '')}: {getattr(exc, 'reply_text', exc)}"
    return f"{type(exc).__name__}: {exc}"


def _precondition(exc: BaseException, target: RabbitTarget) -> str:
    text = str(getattr(exc, "reply_text", exc))
    if "durable" not in text:
        return f"PRECONDITION_FAILED: {text}"
    wanted = "durable" if target.durable else "transient"
    other = "transient" if target.durable else "durable"
    flag = "false" if target.durable else "true"
    return (
        f"PRECONDITION_FAILED: an exchange or queue we declare {wanted} already exists "
        f"{other} on the broker ({text}). Either delete it (rabbitmqctl delete_queue / "
        f"delete_exchange) or set rabbit_durable_queues = {flag} to match it."
    )
