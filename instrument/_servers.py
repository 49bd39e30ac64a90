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
- **uWSGI**: its ``wsgi.file_wrapper`` is a function and it recognises its file
  responses by identity, so any wrapper loses the zero-copy path; the download is
  counted by iteration and a warning says so, once per process.

When neither is seen and the wrapper was not iterated, nothing is proven sent: the
counter reports 0 bytes at ERROR (a false ERROR rather than a false INFO).

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

__all__ = ["Counter", "Progress", "counted_file_wrapper"]

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


def counted_file_wrapper(
    iterable: Iterable[bytes], environ: Mapping[str, Any] | None, counter: CounterFactory
) -> Any | None:
    """*iterable* as a counted instance of the server's file wrapper class, or None.

    None means: count by iteration (no file wrapper, a body that is not one, a
    wrapper that is not a class, or a class that cannot be subclassed).
    """
    file_wrapper = environ.get("wsgi.file_wrapper") if environ else None
    if file_wrapper is None:
        return None
    if not isinstance(file_wrapper, type):
        warn_opaque(file_wrapper)
        return None
    if not isinstance(iterable, file_wrapper):
        return None
    try:
        return _wrap_file_wrapper(iterable, counter)
    except Exception:
        log.warning("cannot subclass %r; counting without zero-copy", type(iterable))
        return None


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
