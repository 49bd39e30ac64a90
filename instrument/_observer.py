"""Response-iterable wrappers the middleware uses on lifecycle (non-download) routes.

Both are ``__slots__`` classes, never generators: a generator's ``finally`` does not
run when a server closes it before the first ``next()``, and PEP 3333 requires the
application iterable's ``close()`` to be called exactly once, always.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from ._wsgi import close_iterable as close_once

__all__ = ["BODY_LIMIT", "ObservedBody", "SizedObservedBody", "joined_body", "observe"]

log = logging.getLogger("instrument.observer")

#: Lifecycle responses are small JSON documents; keep at most this much of one.
BODY_LIMIT: Final = 1024 * 1024

Done = Callable[[bytes | None, BaseException | None], None]


class ObservedBody:
    """Pass an application body through unchanged, keep a copy of its start, report once.

    *on_done* is called exactly once, with the body (None when it exceeded the
    limit) and the exception that ended iteration, if any: at exhaustion, at an
    exception, or at ``close()``, whichever comes first. Errors inside *on_done* are
    logged, never raised into the server.
    """

    __slots__ = ("_chunks", "_closed", "_iterable", "_iterator", "_on_done", "_size")

    def __init__(
        self, iterable: Iterable[bytes], on_done: Done, written: list[bytes] | None = None
    ) -> None:
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._on_done: Done | None = on_done
        self._chunks: list[bytes] = []
        self._size = 0
        self._closed = False
        for data in written or ():  # what went through write() before the body came back
            self.keep(data)

    def __iter__(self) -> ObservedBody:
        if self._iterator is None:
            self._iterator = iter(self._iterable)
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._iterable)
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._report(None)
            raise
        except BaseException as exc:
            self._report(exc)
            raise
        self.keep(chunk)
        return chunk

    def keep(self, data: bytes) -> None:
        """Keep *data* as the body's next part (a chunk, or what went through
        ``write()``), up to the limit."""
        if self._size <= BODY_LIMIT:
            self._chunks.append(data)
            self._size += len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close_once(self._iterable)
        finally:
            if self._on_done is not None:  # not reported yet (closed before exhaustion)
                self._report(None)

    def _report(self, exc: BaseException | None) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is None:
            return
        body = b"".join(self._chunks) if self._size <= BODY_LIMIT else None
        self._chunks = []
        try:
            on_done(body, exc)
        except Exception:
            log.exception("instrument: failed to emit notifications for a response")


class SizedObservedBody(ObservedBody):
    """An :class:`ObservedBody` whose ``len()`` is the application iterable's.

    Servers set Content-Length from ``len()`` of a one-element list (waitress,
    wsgiref); hiding ``len()`` would change the response's headers.
    """

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]


def joined_body(chunks: list[bytes]) -> bytes | None:
    """A complete body given as a list, joined; None when it exceeds the limit."""
    return b"".join(chunks) if sum(map(len, chunks)) <= BODY_LIMIT else None


def observe(
    iterable: Iterable[bytes], on_done: Done, written: list[bytes] | None = None
) -> ObservedBody:
    """Wrap *iterable*, keeping ``len()`` when it has one; *written* is what the
    application sent through PEP 3333's ``write()`` before returning it."""
    if hasattr(iterable, "__len__"):
        return SizedObservedBody(iterable, on_done, written)
    return ObservedBody(iterable, on_done, written)
