"""A download through a WSGI application, counted: shared by the middleware and decorators.

The application answers as it likes. A 200 or 206 body is wrapped in the image.send
counter (:func:`~instrument.iterators.count_sent`). A 4xx or 5xx emits image.send at
WARN or ERROR with nothing sent, at once; an exception from the application emits it
at ERROR and is re-raised unchanged. Any other status (204 for an image without data,
304, redirects) sent no image and emits nothing, as Glance does.

An application that calls ``start_response`` lazily (a generator) has its first chunk
pulled before the body is returned (:class:`~instrument._observer.Primed`), because
what to count depends on the status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import events as ev
from ._guard import guard
from ._observer import Primed
from ._wsgi import status_code
from .iterators import count_sent, expected_length, receiver_fields
from .notifier import Notifier
from .payloads import send_payload

__all__ = ["COUNTED_STATUSES", "counted_download", "refused_send"]

log = logging.getLogger("instrument.download")

#: Statuses whose body is image data.
COUNTED_STATUSES = frozenset({200, 206})

#: ``describe(status, headers) -> (owner_id, image_size)``, asked only for a 200/206.
Describe = Callable[[str, list[tuple[str, str]]], tuple[Any, Any]]


def counted_download(
    app: Callable[..., Iterable[bytes]],
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    notifier: Notifier,
    *,
    image_id: str | None,
    describe: Describe,
) -> Iterable[bytes]:
    """Call ``app(environ, start_response)`` and count the image it sends."""
    seen: list[Any] = []

    def record(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen[:] = [status, headers]
        return start_response(status, headers, *([exc_info] if exc_info is not None else []))

    try:
        app_iter = app(environ, record)
        if not seen:
            app_iter = Primed.prime(app_iter)
    except Exception:
        guard(refused_send, notifier, image_id, environ, False)
        raise
    if not seen:  # the app never answered; nothing to count
        return app_iter
    try:
        return _counted(app_iter, environ, notifier, image_id, describe, *seen)
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
) -> Iterable[bytes]:
    code = status_code(status)
    if code >= 400:
        refused_send(notifier, image_id, environ, code < 500)
    if code not in COUNTED_STATUSES:
        return app_iter
    owner_id, size = describe(status, headers)
    expected = expected_length(status, headers, size if isinstance(size, int) else None)
    return count_sent(
        app_iter, notifier, image_id=image_id, owner_id=owner_id, expected=expected, environ=environ
    )


def refused_send(
    notifier: Notifier, image_id: str | None, environ: Mapping[str, Any] | None, warn: bool
) -> None:
    """image.send for a download that sent nothing: WARN for a 4xx, ERROR otherwise."""
    payload = send_payload(
        image_id=image_id, owner_id=None, bytes_sent=0, **receiver_fields(environ)
    )
    (notifier.warn if warn else notifier.error)(ev.IMAGE_SEND, payload)
