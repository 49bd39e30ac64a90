"""One kombu connection attempt, bounded as a whole; dropping a connection without I/O.

Decisions:

* **``rabbit_connect_timeout`` bounds the whole attempt to one host**: TCP connect, TLS
  handshake, the AMQP handshake, opening the channel and declaring. py-amqp only bounds
  each step (and each frame read) on its own, so a broker that accepts TCP and then
  answers slowly, or not at all, could take several timeouts. :class:`Deadline` shuts
  the attempt's socket down when the time is up (from a timer thread: ``shutdown()``
  wakes the blocked read at once); the attempt then fails with a ``TimeoutError``.
  It finds the socket through the py-amqp connection class of kombu's transport,
  wrapped per attempt, so nothing global changes.
* **Dropping never touches ``kombu.Connection.connection``**: that property *connects*
  when the connection is not established, which after a failed attempt meant two more
  attempts (and kombu's sleep) inside ``close()``. :func:`drop` uses what exists.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import threading
from collections.abc import Callable
from typing import Any, Final

__all__ = ["Deadline", "drop"]

# kombu's annotations are partial; we use it as an untyped library.
kombu: Any = importlib.import_module("kombu")

_RECHECK: Final = 0.05  # seconds between tries to cut a socket not made yet


class Deadline:
    """Shut down the socket of one connection attempt once *seconds* have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._amqp: Any = None  # py-amqp connection of the attempt, once made
        self._done = threading.Event()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def watch(self, conn: Any) -> Any:
        """Start the clock for kombu connection *conn* (not connected yet); return it."""
        transport = conn.transport
        factory = getattr(transport, "Connection", None)
        if factory is not None:  # py-amqp transports; others have no socket of ours
            transport.Connection = self._recording(factory)
        self._timer.start()
        return conn

    def stop(self) -> None:
        """The attempt is over (succeeded or failed): cut nothing any more."""
        self._done.set()
        self._timer.cancel()

    def _recording(self, factory: Callable[..., Any]) -> Callable[..., Any]:
        def make(**options: Any) -> Any:
            self._amqp = factory(**options)
            return self._amqp

        return make

    def _cut(self) -> None:
        self.expired = True
        while not self._done.is_set():
            sock = getattr(getattr(self._amqp, "transport", None), "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return
            self._done.wait(_RECHECK)  # still resolving or connecting: TCP's own timeout


def drop(conn: Any) -> None:
    """Forget kombu connection *conn* without a close handshake (no network I/O)."""
    amqp_conn: Any = getattr(conn, "_connection", None)  # never .connection: it connects
    with contextlib.suppress(Exception):
        # A TLS socket's close() exchanges close_notify: make it fail at once.
        amqp_conn.transport.sock.settimeout(0)
    with contextlib.suppress(Exception):
        conn.collect()
