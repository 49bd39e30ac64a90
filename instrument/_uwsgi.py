"""uWSGI's file response, kept on uWSGI's sendfile path and counted to the byte.

What uWSGI does with a file response, read from its source (the ``uwsgi-2.0`` branch,
which pip's ``uwsgi`` 2.0.x is built from, and ``master``, the same there):

- ``environ["wsgi.file_wrapper"]`` is ``py_uwsgi_sendfile``
  (``plugins/python/wsgi_handlers.c``): a function that remembers the object it is
  given (``wsgi_req->async_sendfile``, forgetting an earlier one) and returns it.
- ``uwsgi_response_subhandler_wsgi`` (``plugins/python/wsgi_subhandler.c``) takes its
  sendfile path only when the application's result *is* that object: it asks for
  ``fileno()`` and calls ``uwsgi_response_sendfile_do(fd, 0, 0)`` (``core/writer.c``),
  which writes the response head, then the file from byte 0 to its size (``fstat``),
  whatever the file's position, ``Content-Length`` or ``Range``. ``sendfile(2)`` is
  given the offset (``core/sendfile.c``): the file's position does not move.
- Then it calls the result's ``close()``, once: after the whole file was written, and
  just the same after a write error (the client reset the connection, or nothing
  moved for ``socket-timeout``, 4 s by default), which it logs (``write error``) and
  keeps from ``close()``. After a timeout the connection is still open and the client
  may yet read all it was given: ``close()`` alone cannot tell a complete response
  from a cut one.
- With offload threads (``--offload-threads``) the file is handed to another thread,
  and ``close()`` comes before it is sent.

Decisions:

- **The kit's own file response.** :func:`counted_file_response` calls
  ``wsgi.file_wrapper`` again, with a :class:`FileResponse` of its own (``fileno()``,
  ``read()``, ``close()``), and returns what uWSGI returned: that very object. uWSGI
  sees its file response and sends the file itself; ``close()`` tells the kit it ended.
- **Counted at the connection, to the byte.** uWSGI writes the head in the same call
  as the file. When it asks for ``fileno()``, the response has it send the head first,
  with uWSGI's own ``uwsgi.sendfile()`` of an empty file (``/dev/null``: the head, then
  nothing), and notes the connection's position (acknowledged plus the send queue).
  At ``close()`` it reads the position again: the difference is what sendfile gave the
  kernel, exactly, and the body is complete when that is the file's size. What the
  client acknowledged is then judged as on every other server
  (:mod:`instrument._settling`). A head that could not be sent that way (a client
  already gone, no ``/dev/null`` in a chroot) leaves nothing proven: ERROR. The head
  is measured, not computed from the headers: uWSGI may add or drop some
  (``--add-header``, response routes). uWSGI would also take its sendfile path for the
  file response yielded as a chunk of an iterable, and its end would then be seen
  exactly, but any middleware above the kit would be handed an object that is not
  bytes (PEP 3333).
- **Only where uWSGI sends what was promised.** A plain binary file (``io.FileIO``, or
  a buffered reader over one: a file object that transforms what it reads, such as
  ``gzip.GzipFile``, has a ``fileno()`` too) at position 0, of the promised length, on
  a TCP connection the kit can read, and no offload threads. Anything else is read in
  blocks by the counter (:func:`instrument._servers.file_blocks`), up to the promised
  length: a Range gets its range there, where bare uWSGI sends the whole file from
  byte 0.
- **Iterated after all.** Something that iterates the response instead (a middleware
  above the kit) gets the file in counted blocks; ``read()``, uWSGI's fallback when
  ``fileno()`` fails, counts the same way.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from ._connection import Connection
from ._once import run_once
from ._servers import FILE_BLOCK, CounterFactory, FileBlocks, Progress

__all__ = ["FileResponse", "counted_file_response", "offload_threads"]

# The logger of what the kit knows of servers: operators' logging configs name it.
log = logging.getLogger("instrument.servers")

#: File objects whose descriptor holds exactly what they read.
PLAIN_FILES: Final = (io.FileIO, io.BufferedReader, io.BufferedRandom)
#: An empty file: ``uwsgi.sendfile()`` of it sends the response head and nothing else.
EMPTY: Final = os.devnull.encode()


@run_once
def warn_iterated(reason: str) -> None:
    """Say once per process why uWSGI's file responses are iterated."""
    log.warning(
        "uWSGI: counted file responses are sent by iteration, without uWSGI's sendfile: %s",
        reason,
    )


def counted_file_response(
    iterable: Iterable[bytes],
    environ: Mapping[str, Any] | None,
    expected: int | None,
    connection: Connection | None,
    counter: CounterFactory,
) -> FileResponse | None:
    """*iterable* as a counted file response that uWSGI sends itself, or None.

    None means: count by iteration (not uWSGI, not a whole plain file as promised, or
    no way to count it at the connection).
    """
    if not environ or "uwsgi.version" not in environ or not isinstance(iterable, PLAIN_FILES):
        return None
    file_wrapper = environ.get("wsgi.file_wrapper")
    size = whole_file_size(iterable, expected)
    if file_wrapper is None or size is None:
        return None
    if connection is None:
        warn_iterated("the kit cannot read the connection's TCP_INFO (not TCP, or not Linux)")
        return None
    import uwsgi  # only inside uWSGI

    if offload_threads(getattr(uwsgi, "opt", {})):
        warn_iterated("offload threads send a file after its response was closed")
        return None
    response = FileResponse(iterable, size, connection, counter)
    return response if file_wrapper(response, FILE_BLOCK) is response else None


def whole_file_size(file: Any, expected: int | None) -> int | None:
    """The size of *file* when uWSGI's sendfile sends what was promised: all of it."""
    try:
        position = file.tell()
        status = os.fstat(file.fileno())
    except (OSError, ValueError):
        return None
    if position != 0 or not stat.S_ISREG(status.st_mode):
        return None
    if expected is not None and expected != status.st_size:
        return None
    return status.st_size


def offload_threads(options: Mapping[str, Any]) -> bool:
    """Whether ``uwsgi.opt`` asks for offload threads.

    ``--offload-threads`` (alias ``--offload-thread``) is uWSGI's only switch for them;
    a value is bytes, a repeated option a list whose last value counts.
    """
    for name in ("offload-threads", "offload-thread"):
        value = options.get(name)
        if isinstance(value, list):
            value = value[-1] if value else None
        if value is None:
            continue
        text = value.decode() if isinstance(value, bytes) else str(value)
        if text.strip() not in ("", "0"):
            return True
    return False


def send_head(connection: Connection) -> int | None:
    """Have uWSGI send the response head now; the connection's position after it.

    ``uwsgi.sendfile()`` of an empty file writes the head with uWSGI's own code, as it
    would have before the file, and nothing more. None: the head was not sent (the
    file could not be opened; a write error, which uWSGI reports by returning NULL
    without an exception, a SystemError here).
    """
    import uwsgi  # only inside uWSGI

    try:
        sent = uwsgi.sendfile(EMPTY)
    except Exception:
        log.debug("uWSGI did not send the response head", exc_info=True)
        return None
    reading = connection.reading() if sent is True else None
    return None if reading is None else reading[1]


class FileResponse:
    """The application's file as uWSGI's own file response, counted; see the module doc.

    ``close()`` closes the application's file exactly once (through the counter).
    """

    __slots__ = ("_asked", "_connection", "_counter", "_file", "_head_end", "_size")

    def __init__(
        self, file: Any, size: int, connection: Connection, counter: CounterFactory
    ) -> None:
        self._file = file
        self._size = size
        self._connection = connection
        self._asked = False  # uWSGI asked for the descriptor: it sends the file itself
        self._head_end: int | None = None  # the connection's position after the head
        self._counter = counter(FileBlocks(file, size))

    def fileno(self) -> int:
        """uWSGI asks just before it sends the file: the head goes first, its end noted."""
        if not self._asked:
            self._asked = True
            self._head_end = send_head(self._connection)
        return int(self._file.fileno())

    def read(self, size: int = -1) -> bytes:
        """The next block, counted (uWSGI reads only when ``fileno()`` fails)."""
        return next(self._counter, b"")

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._counter)

    def close(self) -> None:
        """Report what uWSGI's sendfile gave the connection, then close the file."""
        self._counter.close_with(self._progress())

    def _progress(self) -> Progress | None:
        """Body bytes given to the kernel since the head, and whether that is the file."""
        if self._head_end is None:
            return None
        reading = self._connection.reading()
        if reading is None:
            return None
        sent = max(reading[1] - self._head_end, 0)
        return sent, sent >= self._size
