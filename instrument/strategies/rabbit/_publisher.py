"""The kombu side of the rabbit strategy: connect, declare, publish a batch, confirm.

Imported only by the strategy inside its methods, so that
``import instrument.strategies.rabbit`` works without kombu.

Decisions:

* **One kombu Connection per URL, failover by hand** (:func:`.._broker.failover`, as
  for qpid): each URL once, starting with the one that worked last, and for every
  host why it failed. ``connect_timeout`` bounds the whole attempt to one host
  (:class:`._connection.Deadline`), so the next host is tried within it.
* **Pipelined publisher confirms** (:mod:`._confirms`): the whole batch is written,
  then every delivery tag of it must be acked; any nack or a timeout fails the batch.
* **A memory or disk alarm is waited out on the one connection** (:mod:`._alarm`),
  the batch written in pieces while the broker's frames are read.
* **A batch is encoded by pamqp and written at once** (:mod:`._frames`): py-amqp
  spends ~10 us and a syscall per message, which capped a batch at py-amqp's speed.
  py-amqp still owns the connection: the handshake, declarations, confirm mode,
  heartbeats and reading the acks, and every frame goes through its transport under
  one write lock. When the connection lacks what the batch path needs (our
  :class:`._frames.FrameWriter` installed, ``frame_max``), or pamqp is not installed,
  the public ``basic_publish`` is used instead (slower, same wire format), logged
  once. ``Channel.events`` (how acks reach us on either path) is required: without it
  connect() fails and says so, rather than publishing unconfirmed.
* **Nothing waits forever on a broker that stops reading** (memory or disk alarm,
  half-open TCP): the socket gets a write timeout (``rabbit_confirm_timeout``) and a
  read timeout (``rabbit_connect_timeout``), and after a failed attempt the connection
  is dropped with ``collect()`` (no network I/O) instead of a close handshake that
  would wait for a ``Close-Ok`` that never comes.
* **Other kombu transports** (``memory://``, ``filesystem://``, ``redis://``) have no
  confirms: a publish that returned is taken as delivered.
* **Declared on every new connection**, before the publishing channel is opened and on
  channels of their own (:func:`.._topology.declare_glance`): the topic exchange and the
  queues ``<topic>.info|warn|error`` bound with their own names as keys, so nothing is
  dropped before a consumer starts. What exists is adopted as it is (one warning per
  name when it differs); what is missing is created with ``rabbit_durable_queues`` and
  ``rabbit_quorum_*``. Messages are always persistent (delivery mode 2), as
  oslo.messaging sends them: a durable queue someone else declared keeps them across a
  broker restart, and a transient queue costs nothing more for it.
* **Errors are explained**, not passed through (:func:`._errors.explain`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any, Final

from ...events import Notification
from ...exceptions import DeliveryError, StrategyError
from .._broker import failover, mask_url, run_once
from .._topology import declare_glance
from ._alarm import Alarm
from ._config import RabbitTarget
from ._confirms import Confirms
from ._connection import Deadline, drop
from ._errors import explain

try:
    from ._frames import FrameWriter, publish_frames, refusal
except ImportError as exc:  # pamqp is not installed: basic_publish (see _batch_possible)
    _ENCODER_MISSING = f"pamqp ({exc})"
else:
    _ENCODER_MISSING = ""

__all__ = ["RabbitPublisher"]

log = logging.getLogger("instrument.strategies.rabbit")

# kombu's annotations are partial; we use it as an untyped library.
kombu: Any = importlib.import_module("kombu")

# What the batch path needs of a py-amqp connection (see the module docstring).
#: AMQP's delivery mode of a message the broker writes to disk in a durable queue.
PERSISTENT: Final = 2
_BATCH_NEEDS: Final = ("frame_writer.write", "frame_max")
# TCP_USER_TIMEOUT is 18 on Linux; Python has the name from 3.6 on Linux only.
_NO_USER_TIMEOUT: Final = (
    {getattr(socket, "TCP_USER_TIMEOUT", 18): 0} if sys.platform == "linux" else {}
)


@run_once
def _warn_fallback(missing: str) -> None:
    log.warning(
        "rabbit: no batch writes, missing %s; publishing through basic_publish instead "
        "(correct, slower)",
        missing,
    )


class RabbitPublisher:
    """Implements :class:`instrument.delivery.Publisher` with kombu."""

    def __init__(self, target: RabbitTarget) -> None:
        self.target = target
        self._index = 0
        self._conn: Any = None
        self._channel: Any = None
        self._confirms = False
        self._batched = False  # one write per batch (see _frames)
        self._tags = Confirms()  # delivery tags of the confirming channel
        self._alarm = Alarm()  # connection.blocked/unblocked (confirming connections)

    # ------------------------------------------------------------ Publisher

    def connect(self) -> None:
        self._index = failover(self.target.urls, self._index, self._open, self._reason, self.close)

    def publish_batch(self, batch: Sequence[Notification]) -> None:
        try:
            if self._confirms:
                self._alarm.wait_over(self._conn, bool(self.target.heartbeat))
                self._tags.start_batch()
                if self._batched:
                    self._publish_frames(batch)
                else:
                    for notification in batch:
                        self._publish(notification)
                self._tags.wait(
                    self._conn,
                    self._alarm,
                    self.target.confirm_timeout,
                    bool(self.target.heartbeat),
                )
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
            drop(conn)

    # ------------------------------------------------------------ internals

    def _open(self, url: str) -> None:
        """Connect, open the channel and declare, all within ``connect_timeout``."""
        deadline = Deadline(self.target.connect_timeout)
        try:
            self._connect(url, deadline)
        except Exception as exc:
            if deadline.expired:
                raise TimeoutError(f"no answer within {deadline.seconds:g} s") from exc
            raise
        finally:
            deadline.stop()

    def _connect(self, url: str, deadline: Deadline) -> None:
        target = self.target
        conn = kombu.Connection(
            url,
            ssl=target.ssl_options(url),
            heartbeat=target.heartbeat,
            connect_timeout=target.connect_timeout,
            transport_options=_transport_options(target),
        )
        self._conn = deadline.watch(conn)
        conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        declare_glance(conn, target.topology)  # on channels of its own (see _topology)
        self._channel = conn.channel()
        self._confirms = hasattr(self._channel, "confirm_select")
        if self._confirms:
            self._alarm.listen(conn.connection)
            self._channel.confirm_select()
            if not isinstance(getattr(self._channel, "events", None), dict):
                raise StrategyError(
                    "this py-amqp has no Channel.events: publisher confirms cannot be read "
                    "(install the py-amqp version kombu requires)"
                )
            self._batched = _batch_possible(conn.connection, target)
            self._tags.listen(self._channel)

    def _reason(self, url: str, exc: Exception) -> str:
        return f"{mask_url(url)}: {explain(exc, self.target, url)}"

    def _publish(self, notification: Notification) -> None:
        target = self.target
        message = self._channel.prepare_message(
            target.encode(notification),
            content_type="application/json",
            content_encoding="utf-8",
            properties={
                "delivery_mode": PERSISTENT,
                "message_id": notification.message_id,
            },
        )
        routing_key = f"{target.topic}.{notification.priority.lower()}"
        self._channel.basic_publish(
            message, exchange=target.exchange, routing_key=routing_key, mandatory=True
        )
        if self._confirms:
            self._tags.add(1)

    def _publish_frames(self, batch: Sequence[Notification]) -> None:
        """Encode the batch with pamqp and write it in one piece (see :mod:`._frames`)."""
        amqp_conn = self._conn.connection
        channel_id = self._channel.channel_id
        target = self.target
        frames = [
            publish_frames(
                channel_id,
                target.exchange,
                f"{target.topic}.{notification.priority.lower()}",
                target.encode(notification),
                notification.message_id,
                PERSISTENT,
                amqp_conn.frame_max,
            )
            for notification in batch
        ]
        self._tags.add(len(batch))
        send = self._alarm.writer(self._conn, target.confirm_timeout, target.heartbeat)
        amqp_conn.frame_writer.write(b"".join(frames), send)


def _transport_options(target: RabbitTarget) -> dict[str, Any]:
    options: dict[str, Any] = {
        "confirm_publish": False,
        # socket-level (SO_RCVTIMEO/SO_SNDTIMEO): blocking reads and writes end
        "read_timeout": target.connect_timeout,
        "write_timeout": target.confirm_timeout,
        # py-amqp's default TCP_USER_TIMEOUT (1 s) lets the kernel abort a connection
        # whose data waits unread for a second: exactly what a blocked broker does
        # (see _alarm). Dead brokers are found by heartbeats and our own timeouts.
        "socket_settings": _NO_USER_TIMEOUT,
    }
    if not _ENCODER_MISSING:
        options["frame_writer"] = FrameWriter  # py-amqp's, behind the lock we write under
    return options


def _batch_possible(amqp_conn: Any, target: RabbitTarget) -> bool:
    """Whether the connection has what :meth:`RabbitPublisher._publish_frames` needs."""
    missing = [name for name in _BATCH_NEEDS if _lookup(amqp_conn, name) is None]
    if _ENCODER_MISSING:
        missing.append(_ENCODER_MISSING)
    elif reason := refusal(target.exchange, f"{target.topic}.info"):
        missing.append(reason)
    if missing:
        _warn_fallback(", ".join(missing))
    return not missing


def _lookup(obj: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj
