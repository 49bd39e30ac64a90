"""image.send in one place: count what a download hands to the server, report it once.

:func:`count_sent` wraps the body an image API returns for a download and emits one
``image.send`` notification per response; :func:`counted_download` calls a WSGI
application and counts what it sends (the middleware's and the decorators' path);
:func:`refused_send` reports a download that sent nothing. Decisions:

- **What is counted.** The bytes handed to the server: a chunk counts when ``next()``
  returns it. A server that pulled a chunk and then failed to write it (the client went
  away) has that chunk counted; such a response is still ERROR, because INFO on the
  iteration path needs the iterable to have been *exhausted* (a server only asks for
  the next chunk after writing the previous one) and ``bytes_sent == expected``.
- **When.** Exactly once: at exhaustion, when the application iterable raises (then the
  same exception is re-raised), or at ``close()``, whichever comes first; also for a
  body that is closed without ever being iterated. INFO when the response is complete
  and ``bytes_sent == expected`` (``expected=None``: complete is enough), else ERROR.
  The payload is :func:`~instrument.payloads.send_payload`, the same dict either way.
- **Which responses.** Through :func:`counted_download`, a 200 or 206 body is counted.
  A 4xx or 5xx emits image.send at WARN or ERROR with nothing sent, at once; an
  exception from the application emits it at ERROR and is re-raised unchanged. Any
  other status (204 for an image without data, 304, redirects) sent no image and emits
  nothing, as Glance does. An application that calls ``start_response`` lazily (a
  generator) has its first chunk pulled before the body is returned (:class:`Primed`),
  because what to count depends on the status.
- **PEP 3333.** The wrappers are ``__slots__`` classes, not generators: a generator's
  ``finally`` does not run when it is closed before its first ``next()``, and
  ``yield from`` plus ``close()`` closes the application iterable twice. The
  application iterable's ``close()`` is called exactly once, even when iteration
  raised or the wrapper is closed twice. Nothing is buffered; ``len()`` passes through
  (servers use ``len()`` of a one-element list to set Content-Length).
- **At the socket.** Where the server lets the kit reach the client's TCP connection,
  the one report (:class:`~instrument._settling.Report`) checks what was written
  against what the client acknowledged; a response whose tail is still in flight is
  settled by a process-wide thread, never in the server's worker (see
  :mod:`instrument._settling`).
- **wsgi.file_wrapper.** A body that is the server's own file response keeps the
  server's zero-copy path; what was sent there is read from the server's bookkeeping
  (see :mod:`instrument._servers`, which knows each server, and
  :mod:`instrument._uwsgi`, where the kit makes uWSGI's file response itself).
- **Overhead.** ``iter()`` on a counter returns a tiny counting generator (see
  :class:`SendCounter`): about 70-120 ns per chunk on the development VM, against
  about 200 ns for a Python ``__next__``. Nothing else happens per chunk: no locks,
  no clock reads; the notification is built once, at the end.
- **Isolation.** Failures of the notifier or the payload are logged, never raised into
  the server; the application's own exceptions pass through unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import wrapt

from ._connection import connection
from ._guard import guard
from ._once import run_once
from ._servers import Progress, counted_file_wrapper, file_blocks
from ._settling import Report
from ._uwsgi import counted_file_response
from ._wsgi import Environ, StartResponse, WSGIApp, close_iterable, status_code
from .events import IMAGE_SEND
from .lifecycle import failure_priority
from .notifier import Notifier
from .payloads import send_payload

__all__ = [
    "COUNTED_STATUSES",
    "CountedApp",
    "Primed",
    "SendCounter",
    "SizedSendCounter",
    "count_result",
    "count_sent",
    "counted_download",
    "expected_length",
    "receiver_fields",
    "refused_send",
]

# The loggers these parts have always used: operators' logging configs name them.
log = logging.getLogger("instrument.sending")

#: Statuses whose body is image data.
COUNTED_STATUSES: Final = frozenset({200, 206})

#: ``describe(status, headers) -> (owner_id, image_size)``, asked only for a 200/206.
Describe = Callable[[str, list[tuple[str, str]]], tuple[Any, Any]]

if TYPE_CHECKING:
    _Proxy = wrapt.ObjectProxy[Any]
else:
    _Proxy = wrapt.ObjectProxy

_CONTENT_RANGE: Final = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)

# What the response promised, and who receives it ---------------------------------


def expected_length(
    status: str, headers: list[tuple[str, str]], image_size: int | None
) -> int | None:
    """The body length a response promises: Content-Length, a 206's range, or *image_size*.

    A 206 without Content-Length and without a single ``bytes a-b/N`` Content-Range
    (a multipart/byteranges body) promises an unknown length: None.
    """
    fields = {name.lower(): value for name, value in headers}
    length = _non_negative_int(fields.get("content-length"))
    if length is not None:
        return length
    if not status.startswith("206"):
        return image_size
    match = _CONTENT_RANGE.match(fields.get("content-range", ""))
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    return last - first + 1 if last >= first else None


def _non_negative_int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def receiver_fields(
    environ: Mapping[str, Any] | None,
    tenant: str | None = None,
    user: str | None = None,
    ip: str | None = None,
) -> dict[str, Any]:
    """Who receives the image: explicit values, else the auth layer's headers and REMOTE_ADDR."""
    env: Mapping[str, Any] = environ or {}
    return {
        "receiver_tenant_id": tenant or env.get("HTTP_X_TENANT_ID") or env.get("HTTP_X_PROJECT_ID"),
        "receiver_user_id": user or env.get("HTTP_X_USER_ID"),
        "destination_ip": ip or env.get("REMOTE_ADDR"),
    }


# The counter ------------------------------------------------------------------------


class SendCounter:
    """Iterate the application iterable, counting bytes; emit image.send once.

    ``bytes_sent`` is the running count. ``close()`` is idempotent and closes the
    application iterable exactly once. ``iter()`` returns a small counting generator
    over the shared application iterator: CPython resumes a generator frame about
    twice as fast as it calls a Python ``__next__``, and that is the whole per-chunk
    cost. The generator never owns the close or the emission at close (it holds no
    ``finally``), so its own lifecycle cannot lose or repeat either; ``next()`` on the
    counter itself works too, through the slower ``__next__``.
    """

    __slots__ = ("_iterable", "_iterator", "_report", "bytes_sent")

    def __init__(self, iterable: Iterable[bytes], report: Report) -> None:
        self._iterable = iterable
        self._report = report
        self.bytes_sent = 0
        # iter() of the application iterable runs application code: it happens when
        # the server iterates, so a failure there reaches the server like the bare
        # app's would, and the server's close() closes the iterable (once).
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self._count()

    def _started(self) -> Iterator[bytes]:
        if self._iterator is None:
            self._iterator = iter(self._iterable)
        return self._iterator

    def _count(self) -> Iterator[bytes]:
        try:
            for chunk in self._started():
                self.bytes_sent += len(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException:
            self._report.finish(self.bytes_sent, False)
            raise
        self._report.finish(self.bytes_sent, True)

    def __next__(self) -> bytes:
        try:
            chunk = next(self._started())
        except StopIteration:
            self._report.finish(self.bytes_sent, True)
            raise
        except BaseException:
            self._report.finish(self.bytes_sent, False)
            raise
        self.bytes_sent += len(chunk)
        return chunk

    def close(self) -> None:
        """Emit (if not yet done) as an incomplete response, then close the app's iterable."""
        self._report.finish(self.bytes_sent, False)
        if self._report.claim_close():
            close_iterable(self._iterable)

    def close_with(self, progress: Progress | None) -> None:
        """Close, first reporting what the server sent outside iteration (zero-copy).

        *progress* is None when the server's bookkeeping was never seen: then only a
        response that promised nothing and sent nothing is complete.
        """
        report = self._report
        if progress is not None:
            sent, complete = progress
            complete = complete or report.expected == sent
            report.finish(self.bytes_sent + sent, complete, drained=True)
        elif report.expected == 0 and self.bytes_sent == 0:
            report.finish(0, True)  # nothing promised, nothing to send
        self.close()


class SizedSendCounter(SendCounter):
    """A :class:`SendCounter` whose ``len()`` is the application iterable's."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]


def count_sent(
    iterable: Iterable[bytes],
    notifier: Notifier,
    *,
    image_id: str | None,
    owner_id: str | None = None,
    expected: int | None = None,
    environ: Mapping[str, Any] | None = None,
    receiver_tenant_id: str | None = None,
    receiver_user_id: str | None = None,
    destination_ip: str | None = None,
) -> Iterable[bytes]:
    """Wrap a response body so that one image.send reports the bytes handed to the server.

    *expected* is the body length the response promised (see :func:`expected_length`);
    None means unknown. Explicit receiver values override what *environ* gives
    (``HTTP_X_TENANT_ID``/``HTTP_X_PROJECT_ID``, ``HTTP_X_USER_ID``, ``REMOTE_ADDR``).

    The answer to a HEAD request (per *environ*) is returned as it is: the server sends
    no body, so no image was sent.
    """
    if environ is not None and environ.get("REQUEST_METHOD") == "HEAD":
        return iterable
    fields: dict[str, Any] = {"image_id": image_id, "owner_id": owner_id}
    fields.update(receiver_fields(environ, receiver_tenant_id, receiver_user_id, destination_ip))
    report = Report(notifier, expected, fields, connection(environ))
    if report.connection is not None and environ and not _PROXY_HEADERS.isdisjoint(environ):
        warn_proxied()
    zero_copy = _file_response(iterable, environ, report)
    if zero_copy is not None:
        return zero_copy  # type: ignore[no-any-return]
    iterable = file_blocks(iterable, environ, expected)
    if hasattr(iterable, "__len__"):
        return SizedSendCounter(iterable, report)
    return SendCounter(iterable, report)


#: Request headers a reverse proxy adds (WSGI names).
_PROXY_HEADERS: Final = frozenset({"HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_VIA"})


@run_once
def warn_proxied() -> None:
    """Say once per process that the connection read is a proxy's (README, "bytes_sent")."""
    log.warning(
        "instrument: downloads come through a reverse proxy (X-Forwarded-For, Forwarded "
        "or Via): the TCP connection the kit reads is the proxy's, whose buffers may take "
        "a whole image, so an aborted download can be reported complete"
    )


def _file_response(
    iterable: Iterable[bytes], environ: Mapping[str, Any] | None, report: Report
) -> Any | None:
    """The server's own file response, counted, where the kit can keep it; else None.

    An instance of the server's file wrapper class (gunicorn, waitress), or uWSGI's
    file response made anew (:mod:`instrument._uwsgi`).
    """

    def counter(body: Iterable[bytes]) -> SendCounter:
        return SendCounter(body, report)

    kept = counted_file_wrapper(iterable, environ, counter)
    if kept is None:
        kept = counted_file_response(iterable, environ, report.expected, report.connection, counter)
    return kept


# A download through a WSGI application ---------------------------------------------


class Primed:
    """An application iterable whose first chunk was already pulled.

    Used when an application calls ``start_response`` lazily (a generator): the
    status must be seen before it can be decided how to count a download.
    ``close()`` closes the original iterable exactly once.
    """

    __slots__ = ("_closed", "_first", "_iterable", "_iterator")

    def __init__(
        self, first: bytes | None, iterator: Iterator[bytes], iterable: Iterable[bytes]
    ) -> None:
        self._first = first
        self._iterator = iterator
        self._iterable = iterable
        self._closed = False

    def __iter__(self) -> Primed:
        return self

    def __next__(self) -> bytes:
        first, self._first = self._first, None
        if first is not None:
            return first
        return next(self._iterator)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            close_iterable(self._iterable)

    @classmethod
    def prime(cls, iterable: Iterable[bytes]) -> Any:
        """Pull the first chunk of *iterable* (closing it if that raises)."""
        try:
            iterator = iter(iterable)
            first = next(iterator)
        except StopIteration:
            return cls(None, iter(()), iterable)
        except BaseException:
            close_iterable(iterable)
            raise
        return cls(first, iterator, iterable)


def counted_download(
    app: WSGIApp,
    environ: Environ,
    start_response: StartResponse,
    notifier: Notifier,
    *,
    image_id: str | None,
    describe: Describe,
) -> Iterable[bytes]:
    """Call ``app(environ, start_response)`` and count the image it sends."""
    seen: list[Any] = []
    written = [0]  # what went through PEP 3333's write() before the counter existed
    counters: list[SendCounter] = []  # then the counter, which counts what follows

    def record(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen[:] = [status, headers]
        write = start_response(status, headers, *([exc_info] if exc_info is not None else []))

        def counted_write(data: bytes) -> Any:
            if counters:
                counters[0].bytes_sent += len(data)
            else:
                written[0] += len(data)
            return write(data)

        return counted_write

    try:
        app_iter = app(environ, record)
        if not seen:
            app_iter = Primed.prime(app_iter)
    except Exception:
        guard(refused_send, notifier, image_id, environ, 500)
        raise
    if not seen:  # the app never answered; nothing to count
        return app_iter
    try:
        status, headers = seen
        counted = _counted(
            app_iter, environ, notifier, image_id, describe, status, headers, written[0]
        )
        if isinstance(counted, SendCounter):  # a generator may write as it is iterated
            counters.append(counted)
        return counted
    except Exception:
        log.exception("instrument: cannot count the download of image %s", image_id)
        return app_iter


def _counted(
    app_iter: Iterable[bytes],
    environ: Mapping[str, Any],
    notifier: Notifier,
    image_id: str | None,
    describe: Describe,
    status: str,
    headers: list[tuple[str, str]],
    written: int,
) -> Iterable[bytes]:
    code = status_code(status)
    if code >= 400:
        refused_send(notifier, image_id, environ, code)
    if code not in COUNTED_STATUSES:
        return app_iter
    owner_id, size = describe(status, headers)
    expected = expected_length(status, headers, size if isinstance(size, int) else None)
    if written:
        fields = {"image_id": image_id, "owner_id": owner_id, **receiver_fields(environ)}
        return _count_after_write(app_iter, Report(notifier, expected, fields), written)
    return count_sent(
        app_iter, notifier, image_id=image_id, owner_id=owner_id, expected=expected, environ=environ
    )


def _count_after_write(app_iter: Iterable[bytes], report: Report, written: int) -> SendCounter:
    """A body that began with *written* bytes sent through ``write()``, counted from
    there as handed to the server. *report* reads no connection: this response began
    before the kit could note where on the connection it did."""
    counter = SendCounter(app_iter, report)
    counter.bytes_sent = written
    return counter


def refused_send(
    notifier: Notifier, image_id: str | None, environ: Mapping[str, Any] | None, code: int
) -> None:
    """image.send for a download that sent nothing, at the priority of its status *code*.

    WARN for a 4xx, ERROR for a 5xx; give 500 for an exception.
    """
    payload = send_payload(
        image_id=image_id, owner_id=None, bytes_sent=0, **receiver_fields(environ)
    )
    notifier.notify(failure_priority(code), IMAGE_SEND, payload)


# A decorated handler's result --------------------------------------------------------


class CountedApp(_Proxy):
    """A WSGI application result, unchanged but for counting the body it produces."""

    def __init__(
        self, app: Any, notifier: Notifier, fields: dict[str, Any], size: int | None
    ) -> None:
        super().__init__(app)
        self._self_notifier, self._self_fields, self._self_size = notifier, fields, size

    def __call__(self, environ: Environ, start_response: StartResponse) -> Any:
        fields = self._self_fields
        return counted_download(
            self.__wrapped__,
            environ,
            start_response,
            self._self_notifier,
            image_id=fields["image_id"],
            describe=lambda status, headers: (fields["owner_id"], self._self_size),
        )


def count_result(
    result: Any,
    notifier: Notifier,
    *,
    image_id: str | None,
    owner_id: str | None,
    size: int | None,
    environ: Mapping[str, Any] | None,
) -> Any:
    """A download handler's result, counted: a WSGI application is proxied, a body wrapped.

    A body given whole as ``bytes`` (or ``bytearray``, ``memoryview``) is returned as
    it is, since a framework sends it as one; it cannot be followed to the client, so
    its image.send says what was handed over, at once (as on a server where the kit
    cannot reach the connection). Anything else that is not a body (text, a mapping, a
    number) is returned unchanged: there is nothing to count.
    """
    fields = {"image_id": image_id, "owner_id": owner_id}
    if callable(result):
        return CountedApp(result, notifier, fields, size)
    if isinstance(result, (bytes, bytearray, memoryview)):
        fields.update(receiver_fields(environ))
        Report(notifier, size, fields).finish(memoryview(result).nbytes, True)
        return result
    if isinstance(result, (str, Mapping)) or not hasattr(result, "__iter__"):
        return result
    return count_sent(result, notifier, expected=size, environ=environ, **fields)
