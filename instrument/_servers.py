"""What the kit knows of each WSGI server, so that counting a download costs it nothing.

A server may send a file response without iterating it (PEP 3333's optional
``wsgi.file_wrapper``): the zero-copy path. Wrapping such a body in a plain counter
would hide it from the server, so :func:`counted_file_wrapper` keeps it: when the
application returned an instance of the server's ``wsgi.file_wrapper`` class, the
result is an instance of a subclass of that class (one per class, cached) sharing the
same file and block size. What was sent there is read from the server's own
bookkeeping:

- **gunicorn** (and anything using :meth:`socket.socket.sendfile` on ``.filelike``):
  ``.filelike`` becomes a proxy that sees the ``seek(offset + total_sent)`` that
  ``socket.sendfile`` always makes, on return and on error; that is what sendfile
  reported as accepted by the kernel.
- **waitress** (``prepare()``/``remain`` buffers): ``prepare()``'s result minus
  ``remain`` at ``close()``; the connection decrements ``remain`` only by what
  ``send()`` took.
- **uWSGI**: its ``wsgi.file_wrapper`` is a function that returns the file itself, and
  uWSGI recognises its file response by identity, so no wrapper can keep it; instead
  :mod:`instrument._uwsgi` makes the kit's own file response, which uWSGI sends with
  sendfile and the kit counts at the connection. A file body it does not take (a
  Range, offload threads, no TCP connection) is iterated: a binary file iterates by
  lines, so :func:`file_blocks` reads it in blocks, no further than the promised
  length.
- **Apache mod_wsgi**: counted by iteration, on purpose. Its ``wsgi.file_wrapper``
  is a C type (``mod_wsgi.FileWrapper``) whose state the kit cannot share with a
  subclass instance, but the reason is honesty, not the type: read from its source
  (``Adapter_process_file_wrapper`` and ``Adapter_output_file``, ``src/server/
  mod_wsgi.c`` in 4.9, ``wsgi_adapter.c`` in 5.x), mod_wsgi hands the whole file to
  Apache's output filters as one brigade (file bucket, flush, end of stream) and
  learns only success or failure. A failure (the client went away) raises an
  ``IOError`` that ``Adapter_run`` logs, and clears, before it calls ``close()``,
  exactly as after a success; the descriptor's position is restored either way, and
  the ``request_finished`` event's ``output_length`` is the promised length in both
  cases. In daemon mode the transfer only reaches Apache's child, over a Unix socket;
  the client's socket is in another process. So the end of a zero-copy transfer looks
  the same whether the client got the file or not: the kit could only guess INFO
  (false for every aborted download) or ERROR (false for every complete one).
  Iterated, what mod_wsgi took is counted, and a download it stopped taking is ERROR;
  its ``FileWrapper`` iterates to the end of the file where mod_wsgi itself would
  send only ``Content-Length`` (a Range), so :func:`file_blocks` cuts it there.

When neither is seen and the wrapper was not iterated, nothing is proven sent: the
counter reports 0 bytes at ERROR (a false ERROR rather than a false INFO).

The client's TCP connection, where a server lets the kit reach it, is
:mod:`instrument._connection`'s.

This module knows servers, not notifications: the counter it feeds is whatever
satisfies :class:`Counter` (:class:`instrument.sending.SendCounter`), and what a
server reports is a :data:`Progress`, the shape per-server socket accounting will
also produce.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from ._once import run_once

__all__ = [
    "FILE_BLOCK",
    "Counter",
    "CounterFactory",
    "FileBlocks",
    "Progress",
    "counted_file_wrapper",
    "file_blocks",
]

# The logger the counter has always used: operators' logging configs name it.
log = logging.getLogger("instrument.servers")

#: What a server sent outside iteration: (bytes, whether the end of the file was reached).
Progress = tuple[int, bool]


class Counter(Protocol):
    """What the server adaptations need from the image.send counter."""

    def __iter__(self) -> Iterator[bytes]: ...

    def __next__(self) -> bytes: ...

    def close_with(self, progress: Progress | None) -> None:
        """Report what the server sent outside iteration (None: nothing seen), then close."""


#: Builds the counter of an application iterable (the server's own file wrapper).
CounterFactory = Callable[[Iterable[bytes]], Counter]


@run_once
def warn_opaque(file_wrapper: Any) -> None:
    """Say once per process that a server's file responses lose their zero-copy path."""
    log.warning(
        "wsgi.file_wrapper %r is not a class: counted downloads of its file responses "
        "are sent by iteration, without the server's zero-copy path",
        file_wrapper,
    )


@run_once
def warn_mod_wsgi() -> None:
    """Say once per process why mod_wsgi's file responses are iterated (the module doc)."""
    log.warning(
        "mod_wsgi: counted file responses are sent by iteration, without its file "
        "transfer, whose end looks the same whether the client got the file or not"
    )


def counted_file_wrapper(
    iterable: Iterable[bytes], environ: Mapping[str, Any] | None, counter: CounterFactory
) -> Any | None:
    """*iterable* as a counted instance of the server's file wrapper class, or None.

    None means: count by iteration (no file wrapper, a body that is not one, a
    wrapper that is not a class, mod_wsgi's, or a class that cannot be subclassed).
    uWSGI's file responses are :mod:`instrument._uwsgi`'s.
    """
    file_wrapper = environ.get("wsgi.file_wrapper") if environ is not None else None
    if environ is None or file_wrapper is None:
        return None
    if not isinstance(file_wrapper, type):
        if "uwsgi.version" not in environ:
            warn_opaque(file_wrapper)
        return None
    if not isinstance(iterable, file_wrapper):
        return None
    if "mod_wsgi.version" in environ:
        warn_mod_wsgi()
        return None
    try:
        return _wrap_file_wrapper(iterable, counter)
    except Exception:
        log.warning("cannot subclass %r; counting without zero-copy", type(iterable))
        return None


#: The block size :func:`file_blocks` reads.
FILE_BLOCK = 256 * 1024


def file_blocks(
    iterable: Iterable[bytes], environ: Mapping[str, Any] | None, expected: int | None
) -> Iterable[bytes]:
    """*iterable*, or a file body the server cannot send zero-copy, up to *expected*.

    - An opaque file wrapper (uWSGI) returned a plain file the kit did not make a file
      response of (:mod:`instrument._uwsgi`): a binary file iterates by lines (one per
      ``\\n``: tiny, many chunks); it is read in :data:`FILE_BLOCK` blocks, up to
      *expected* bytes when that is known.
    - An instance of a file wrapper class the kit does not keep (mod_wsgi's): its
      iteration reads to the end of the file, where the server would have sent only
      the promised length (a Range); it is cut at *expected* bytes.
    """
    file_wrapper = environ.get("wsgi.file_wrapper") if environ else None
    if file_wrapper is None:
        return iterable
    if isinstance(file_wrapper, type):
        if expected is None or not isinstance(iterable, file_wrapper):
            return iterable
        return _Limited(iterable, expected)
    if not (hasattr(iterable, "read") and hasattr(iterable, "fileno")):
        return iterable
    return FileBlocks(iterable, expected)


class _Limited:
    """An iterable's chunks up to *limit* bytes (None: all); ``close()`` closes it."""

    __slots__ = ("file", "limit")

    def __init__(self, file: Any, limit: int | None) -> None:
        self.file = file
        self.limit = limit

    def __iter__(self) -> Iterator[bytes]:
        left = self.limit
        for chunk in self.file:
            if left is not None and len(chunk) >= left:
                if left:
                    yield chunk[:left]
                return
            if left is not None:
                left -= len(chunk)
            yield chunk

    def close(self) -> None:
        close = getattr(self.file, "close", None)
        if close is not None:
            close()


class FileBlocks(_Limited):
    """A file read in blocks, at most *limit* bytes; ``close()`` closes the file."""

    __slots__ = ()

    def __iter__(self) -> Iterator[bytes]:
        left = self.limit
        read = self.file.read
        while left is None or left > 0:
            block = read(FILE_BLOCK if left is None else min(FILE_BLOCK, left))
            if not block:
                return
            if left is not None:
                left -= len(block)
            yield block


class _SendfileWatch:
    """Stands in for a file wrapper's ``.filelike``; remembers absolute seeks.

    :meth:`socket.socket.sendfile` ends, on return and on error, with
    ``file.seek(offset + total_sent)`` when it sent anything: that is the progress.
    """

    __slots__ = ("end", "file", "start")

    def __init__(self, file: Any, start: int) -> None:
        self.file = file
        self.start = start
        self.end: int | None = None

    def fileno(self) -> int:
        return int(self.file.fileno())

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self.end = offset
        return int(self.file.seek(offset, whence))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def progress(self) -> Progress | None:
        """What sendfile sent, or None when it was never seen."""
        if self.end is None:
            return None
        try:
            at_eof = self.end >= os.fstat(self.fileno()).st_size
        except (OSError, ValueError):
            at_eof = False
        return max(self.end - self.start, 0), at_eof


class _CountedFileWrapper:
    """Mixin placed before a server's ``wsgi.file_wrapper`` class (see the module doc)."""

    _instrument_counter: Counter
    _instrument_watch: _SendfileWatch | None
    _instrument_prepared: int | None

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._instrument_counter)

    def __next__(self) -> bytes:
        return self._instrument_counter.__next__()

    def close(self) -> None:
        self._instrument_counter.close_with(self._instrument_progress())

    def _instrument_progress(self) -> Progress | None:
        prepared = self._instrument_prepared
        if prepared is not None:
            remain = getattr(self, "remain", None)
            if not isinstance(remain, int):
                return 0, False
            return max(prepared - remain, 0), remain == 0
        watch = self._instrument_watch
        return None if watch is None else watch.progress()


_counted_classes: weakref.WeakKeyDictionary[type, type] = weakref.WeakKeyDictionary()
_class_lock = threading.Lock()


def _counted_class(base: type) -> type:
    with _class_lock:
        counted = _counted_classes.get(base)
        if counted is None:
            namespace: dict[str, Any] = {"__module__": __name__}
            prepare = getattr(base, "prepare", None)
            if callable(prepare):
                namespace["prepare"] = _recording_prepare(prepare)
            counted = type(f"Counted{base.__name__}", (_CountedFileWrapper, base), namespace)
            _counted_classes[base] = counted
        return counted


def _recording_prepare(prepare: Any) -> Any:
    """waitress calls ``prepare(content_length)`` before handing the buffer over."""

    def recording_prepare(self: Any, *args: Any, **kwargs: Any) -> Any:
        prepared = prepare(self, *args, **kwargs)
        # 0 means waitress will not take the zero-copy path (a file it cannot seek):
        # it iterates the buffer instead, and the iteration path counts.
        self._instrument_prepared = prepared if isinstance(prepared, int) and prepared else None
        return prepared

    return recording_prepare


def _wrap_file_wrapper(wrapper: Any, counter: CounterFactory) -> Any:
    """An instance of a counting subclass of ``type(wrapper)`` sharing its state."""
    state = dict(vars(wrapper))
    state.pop("close", None)  # PEP 333's FileWrapper binds filelike.close per instance
    counted: Any = object.__new__(_counted_class(type(wrapper)))
    counted.__dict__.update(state)
    counted._instrument_prepared = None
    counted._instrument_watch = _watch(state.get("filelike"))
    if counted._instrument_watch is not None:
        counted.filelike = counted._instrument_watch
    counted._instrument_counter = counter(wrapper)
    return counted


def _watch(filelike: Any) -> _SendfileWatch | None:
    try:
        start = os.lseek(filelike.fileno(), 0, os.SEEK_CUR)
    except Exception:  # no real file: the server cannot sendfile it either
        return None
    return _SendfileWatch(filelike, start)
