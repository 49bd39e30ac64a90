"""The client's TCP connection of a response, as the kernel sees it.

Where the server lets the kit reach the client's TCP connection, :func:`connection`
gives a :class:`Connection`: what the kernel says of it (Linux ``TCP_INFO``'s
``tcpi_bytes_acked``, and the send queue, ``SIOCOUTQ``), read when a response starts
and when it ends, never per chunk:

- **gunicorn** (every worker): ``environ["gunicorn.socket"]``.
- **uWSGI**: ``uwsgi.connection_fd()``.
- **eventlet.wsgi**: the connection its request input keeps
  (``environ["eventlet.input"]._sock``, a private attribute, looked up with a
  fallback: without it the count is what was handed to the server). eventlet gathers
  chunks under ``eventlet.minimum_write_chunk_size`` (4 KiB) before writing them, so
  a body of tiny chunks may end up to 4 KiB before its tail reaches the socket.
- **waitress**: the channel behind ``environ["waitress.client_disconnected"]``; what
  waitress still holds in its output buffers (``total_outbufs_len``) counts as given
  to the connection but not acknowledged. The kit never flushes them: waitress sends
  the tail it keeps while a task runs (below ``send_bytes``) by itself once the task
  ended, and :mod:`instrument._settling` only watches, off the task's thread.
- Anything else (Apache mod_wsgi, a non-Linux kernel, a Unix socket): None, and the
  counter falls back to what it handed to the server.

The connection is held through a duplicate of its descriptor, so it can still be read
after the server closed its own (waitress does, from its I/O thread, when the client
resets); :meth:`Connection.close` releases it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import struct
import termios
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["Connection", "connection"]

# The logger of what the kit knows of servers: operators' logging configs name it.
log = logging.getLogger("instrument.servers")

#: ``struct tcp_info``: ``tcpi_state`` is its first byte, ``tcpi_bytes_acked`` a u64 at 120.
_TCP_INFO: Final = getattr(socket, "TCP_INFO", None)
_BYTES_ACKED: Final = 120
_TCP_CLOSE: Final = 7
#: How many times :meth:`Connection.reading` tries for a consistent reading.
_READ_TRIES: Final = 8


class Connection:
    """A response's TCP connection as the kernel sees it; see the module doc.

    Byte positions are counted from the start of the connection: ``acked`` is what
    the client's TCP acknowledged, ``given`` what the server was given to send
    (acknowledged, plus the kernel's send queue, plus what the server still holds).
    """

    __slots__ = ("_channel", "_socket")

    def __init__(self, sock: socket.socket, channel: Any = None) -> None:
        self._socket = sock
        self._channel = channel

    def reading(self, *, count_held: bool = True) -> tuple[int, int, bool] | None:
        """``(acked, given, alive)`` now, or None when the kernel cannot say.

        Without *count_held*, ``given`` leaves out what the server still holds: the
        caller knows none of it is the response's own (a file buffer waitress drained
        and closed; later responses may wait behind it).

        The acknowledged count and the send queue take two system calls: an
        acknowledgement arriving between them would leave ``given`` short by what it
        acknowledged. So the count is read again after the queue, until it did not move
        (:data:`_READ_TRIES` times at most; a client acknowledging that fast is rare).
        """
        try:
            for _ in range(_READ_TRIES):
                info = self._socket.getsockopt(socket.IPPROTO_TCP, _TCP_INFO or 0, 136)
                queued = fcntl.ioctl(self._socket.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                after = self._socket.getsockopt(socket.IPPROTO_TCP, _TCP_INFO or 0, 136)
                if len(info) < _BYTES_ACKED + 8 or _acked(info) == _acked(after):
                    break
            else:
                return None
        except (OSError, ValueError):
            return None
        if len(info) < _BYTES_ACKED + 8:
            return None
        acked = _acked(info)
        (outq,) = struct.unpack("=i", queued)
        alive = info[0] != _TCP_CLOSE
        # What the server still holds counts even on a dead connection: it was given to
        # the connection and will never reach the client (a reset while waitress kept
        # the body's tail), so the response cannot look all acknowledged.
        held = self._held() if count_held else 0
        return acked, acked + max(outq, 0) + held, alive

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.close()

    def _held(self) -> int:
        held = getattr(self._channel, "total_outbufs_len", 0)
        return held if isinstance(held, int) else 0


def _acked(info: bytes) -> int:
    """``tcpi_bytes_acked`` of a ``struct tcp_info``."""
    (acked,) = struct.unpack_from("=Q", info, _BYTES_ACKED)
    return int(acked)


def _socket_of(duplicate: int, like: socket.socket | None) -> socket.socket:
    """A socket object owning *duplicate*; the descriptor is closed if that fails.

    With the server's own socket object (*like*) its family, type and protocol are
    given, which spares the three system calls that would ask the kernel for them.
    """
    try:
        if like is None:
            return socket.socket(fileno=duplicate)
        return socket.socket(like.family, like.type, like.proto, duplicate)
    except Exception:
        os.close(duplicate)
        raise


def connection(environ: Mapping[str, Any] | None) -> Connection | None:
    """The client's TCP connection of this request, where the server lets us reach it.

    Not read here: the response's first reading (:class:`~instrument._settling.Report`)
    tells whether the kernel can say anything of it.
    """
    if _TCP_INFO is None or not environ:
        return None
    try:
        fd, like, channel = _server_connection(environ)
        if fd is None:
            return None
        sock = _socket_of(os.dup(fd), like)
    except Exception:
        log.debug("cannot reach the connection", exc_info=True)
        return None
    if sock.type != socket.SOCK_STREAM:
        with contextlib.suppress(OSError):
            sock.close()
        return None
    return Connection(sock, channel)


def _server_connection(environ: Mapping[str, Any]) -> tuple[int | None, Any, Any]:
    """The connection's descriptor, the server's socket object if it has one, and
    waitress's channel when it is waitress."""
    sock = environ.get("gunicorn.socket")
    if isinstance(sock, socket.socket):
        return int(sock.fileno()), sock, None
    if sock is not None:
        return int(sock.fileno()), None, None
    if "uwsgi.version" in environ:
        import uwsgi  # only inside uWSGI

        return int(uwsgi.connection_fd()), None, None
    sock = getattr(environ.get("eventlet.input"), "_sock", None)  # eventlet.wsgi's Input
    if sock is not None and hasattr(sock, "fileno"):
        return int(sock.fileno()), None, None
    disconnected = environ.get("waitress.client_disconnected")
    channel = getattr(disconnected, "__self__", None)
    sock = getattr(channel, "socket", None)
    if sock is not None and hasattr(channel, "outbuf_lock"):
        return int(sock.fileno()), sock if isinstance(sock, socket.socket) else None, channel
    return None, None, None
