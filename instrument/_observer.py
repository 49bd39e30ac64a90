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

__all__ = ["BodyCopy", "ObservedBody", "SizedObservedBody", "observe"]

log = logging.getLogger("instrument.observer")

#: Lifecycle responses are small JSON documents; keep at most this much of one.
BODY_LIMIT: Final = 1024 * 1024

Done = Callable[[bytes | None, BaseException | None], None]


class BodyCopy:
    """The start of a response body, as it comes (chunks, or what went through PEP
    3333's ``write()``), kept up to :data:`BODY_LIMIT`."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def keep(self, data: bytes) -> None:
        """Keep *data* as the body's next part, until the limit is passed."""
        if self._size <= BODY_LIMIT:
            self._chunks.append(data)
            self._size += len(data)

    def joined(self) -> bytes | None:
        """The body kept so far, or None when it went past the limit; then forget it."""
        body = b"".join(self._chunks) if self._size <= BODY_LIMIT else None
        self._chunks = []
        return body


class ObservedBody:
    """Pass an application body through unchanged, keep a copy of its start, report once.

    *on_done* is called exactly once, with the body (None when it exceeded the
    limit) and the exception that ended iteration, if any: at exhaustion, at an
    exception, or at ``close()``, whichever comes first. Errors inside *on_done* are
    logged, never raised into the server. *copy* may already hold what the
    application sent through ``write()``, and go on taking it while the body is
    iterated.
    """

    __slots__ = ("_closed", "_copy", "_iterable", "_iterator", "_on_done")

    def __init__(self, iterable: Iterable[bytes], on_done: Done, copy: BodyCopy) -> None:
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._on_done: Done | None = on_done
        self._copy = copy
        self._closed = False

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
        self._copy.keep(chunk)
        return chunk

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
        try:
            on_done(self._copy.joined(), exc)
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


def observe(iterable: Iterable[bytes], on_done: Done, copy: BodyCopy) -> ObservedBody:
    """Wrap *iterable*, keeping ``len()`` when it has one."""
    if hasattr(iterable, "__len__"):
        return SizedObservedBody(iterable, on_done, copy)
    return ObservedBody(iterable, on_done, copy)
