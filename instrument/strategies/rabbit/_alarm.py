"""A memory or disk alarm (``connection.blocked``) waited out on the one connection.

Decisions:

* **Waited out, never a reason to reconnect.** RabbitMQ says ``connection.blocked``
  and stops reading from a publishing connection, so a connection closed then is
  never noticed by the broker: each retry on a new one left another behind (3 → 7
  during a 25 s alarm). While blocked the publisher writes nothing new and waits for
  ``connection.unblocked`` (confirms of what it wrote before included) with no timeout
  of its own; heartbeats are still checked, so a node that dies meanwhile still ends
  the wait. The request path never notices: emit() only enqueues.
* **A batch is written in pieces, reading while it waits** (:meth:`Alarm.writer`):
  a batch larger than the socket buffers (30 x 40 KB) used to stop mid-frame when the
  broker stopped reading, and the write timeout then cut the connection (5 left open
  in one alarm). The socket is made non-blocking for the batch; ``select`` waits until
  it is writable *or* the broker said something, and what the broker says is read
  (so ``connection.blocked`` is seen before a byte of the batch is sent, and between
  any two pieces). ``rabbit_confirm_timeout`` bounds the time without progress while
  *not* blocked, exactly as the socket's write timeout did; while blocked only the
  broker's silence ends the wait (twice the heartbeat, with heartbeats on), because a
  heartbeat frame cannot be sent in the middle of a frame of ours.
* **No TCP user timeout.** py-amqp sets ``TCP_USER_TIMEOUT`` to 1 s by default: the
  kernel then aborts, silently, a connection whose sent data waits unacknowledged
  for a second, which is what a blocked broker's full receive window looks like. The
  broker never sees that abort (it is not reading), so each one left a connection
  behind. The publisher turns it off (``socket_settings``); a dead broker is still
  found by heartbeats and by the timeouts above.
* The ``basic_publish`` path (no pamqp) writes through py-amqp and keeps the socket's
  write timeout: a batch larger than the socket buffers may still be cut there.
"""

from __future__ import annotations

import contextlib
import select
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["Alarm"]

_BLOCKED_POLL: Final = 1.0  # seconds between heartbeat checks while blocked
_WRITE_POLL: Final = 0.2  # seconds a write waits in select before looking again
_PIECE: Final = 256 * 1024  # bytes handed to one send()
_WOULD_BLOCK: Final = (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError)


class Alarm:
    """The broker's ``connection.blocked``/``unblocked`` for one py-amqp connection."""

    def __init__(self) -> None:
        self.blocked = False

    def listen(self, amqp_conn: Any) -> None:
        """Follow the notices of *amqp_conn* (a new connection: not blocked)."""
        self.blocked = False
        amqp_conn.on_blocked = self._on_blocked
        amqp_conn.on_unblocked = self._on_unblocked

    def wait_over(self, conn: Any, heartbeat: bool) -> None:
        """Run kombu connection *conn*'s events until the broker unblocks it."""
        while self.blocked:
            if heartbeat:
                conn.heartbeat_check()  # raises once the broker is gone
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=_BLOCKED_POLL)

    def writer(self, conn: Any, timeout: float, heartbeat: float) -> Callable[[Any, bytes], None]:
        """``send(transport, data)`` for :meth:`._frames.FrameWriter.write` on *conn*."""

        def send(transport: Any, data: bytes) -> None:
            sock = transport.sock
            previous = sock.gettimeout()
            sock.settimeout(0)
            try:
                _Write(self, conn, timeout, heartbeat).run(sock, memoryview(data))
            finally:
                sock.settimeout(previous)

        return send

    def _on_blocked(self, reason: str) -> None:
        self.blocked = True

    def _on_unblocked(self) -> None:
        self.blocked = False


class _Write:
    """One batch written to a non-blocking socket, the broker's frames read meanwhile."""

    def __init__(self, alarm: Alarm, conn: Any, timeout: float, heartbeat: float) -> None:
        self.alarm, self.conn, self.timeout, self.heartbeat = alarm, conn, timeout, heartbeat
        self.stalled = 0.0  # seconds without progress while not blocked
        self.amqp = conn.connection
        self.received, self.heard = self.amqp.bytes_recv, time.monotonic()

    def run(self, sock: Any, view: memoryview) -> None:
        offset = 0
        while offset < len(view):
            started = time.monotonic()
            blocked = self.alarm.blocked
            readable, writable = _ready(sock, not blocked)
            if readable:
                self._read()
            if writable and not self.alarm.blocked:
                sent = _send(sock, view[offset : offset + _PIECE])
                offset += sent
                self.stalled = 0.0 if sent else self.stalled
            elif not blocked:
                self.stalled += time.monotonic() - started
            self._check(blocked)

    def _read(self) -> None:
        """Process what the broker sent (acks, ``connection.blocked``/``unblocked``)."""
        with contextlib.suppress(TimeoutError):
            self.conn.drain_events(timeout=0)
        if self.amqp.bytes_recv != self.received:
            self.received, self.heard = self.amqp.bytes_recv, time.monotonic()

    def _check(self, blocked: bool) -> None:
        if not blocked and self.stalled >= self.timeout:
            raise TimeoutError(f"the broker read nothing for {self.timeout:g} s")
        silent = time.monotonic() - self.heard
        if blocked and self.heartbeat and silent > 2 * self.heartbeat:
            raise ConnectionError(f"no heartbeat from the blocked broker for {silent:.0f} s")


def _ready(sock: Any, want_write: bool) -> tuple[bool, bool]:
    """Whether *sock* has something to read, and (if asked) room to write."""
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():  # TLS: decrypted bytes select cannot see
        return True, False
    readable, writable, _ = select.select([sock], [sock] if want_write else [], [], _WRITE_POLL)
    return bool(readable), bool(writable)


def _send(sock: Any, piece: memoryview) -> int:
    """Bytes of *piece* the socket took now (TLS retries the same piece when it took none)."""
    try:
        sent: int = sock.send(piece)
    except _WOULD_BLOCK:
        return 0
    return sent
