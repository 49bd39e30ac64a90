"""Asking the wrapped application for an image's metadata.

Some responses do not carry the image (v2 upload and delete answer ``204``), so the
middleware asks the application itself with an internal GET (HEAD for v1, whose GET
returns the data) built from a *copy* of the original environ: same identity and
context (auth headers, ``glance.context`` …), no body, no range, no conditionals.
The response never reaches the client. The environ is marked so that an instrument
filter further down the pipeline lets the subrequest through untouched.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from ._wsgi import close_iterable as close_once
from .images import image_from_body, image_from_headers, parse_json

__all__ = ["SUBREQUEST_KEY", "LookupResult", "get_document", "lookup_image", "subrequest_environ"]

#: Marks an environ built by :func:`lookup_image`.
SUBREQUEST_KEY: Final = "instrument.subrequest"

_BODY_LIMIT: Final = 4 * 1024 * 1024
_DROPPED_HEADERS: Final = (
    "HTTP_RANGE",
    "HTTP_IF_RANGE",
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_CONTENT_MD5",
    "HTTP_TRANSFER_ENCODING",
    "HTTP_EXPECT",
    "HTTP_ACCEPT_ENCODING",  # a compressed body could not be read
    "CONTENT_TYPE",
)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class LookupResult:
    """What a lookup found: the image in notification shape, or the status that refused it."""

    __slots__ = ("image", "status")

    def __init__(self, status: str, image: dict[str, Any] | None) -> None:
        self.status = status
        self.image = image

    @property
    def not_found(self) -> bool:
        return self.status.startswith("404")

    @property
    def refused(self) -> bool:
        """The application refused the lookup (4xx): the request will be refused too."""
        return self.status.startswith("4")


def lookup_image(app: WSGIApp, environ: Mapping[str, Any], method: str, path: str) -> LookupResult:
    """Run ``method path`` through *app* and read the image from the response.

    Raises whatever the application raises; the caller degrades to ``{"id": …}``.
    """
    status, headers, body = _run(app, subrequest_environ(environ, method, path))
    if not status.startswith("2"):
        return LookupResult(status, None)
    return LookupResult(status, image_from_body(body) or image_from_headers(headers))


def get_document(app: WSGIApp, environ: Mapping[str, Any], path: str) -> tuple[str, Any]:
    """``GET path`` through *app*: the status and the JSON document (None if it is not JSON)."""
    status, _, body = _run(app, subrequest_environ(environ, "GET", path))
    try:
        return status, parse_json(body) if body else None
    except ValueError:
        return status, None


def _run(app: WSGIApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    captured: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured[:] = [status, headers]
        return _discard

    app_iter = app(environ, start_response)
    try:
        body = _read_limited(app_iter)
    finally:
        close_once(app_iter)
    status, headers = (captured or ["500 No Response", []])[:2]
    return status, headers, body


def subrequest_environ(environ: Mapping[str, Any], method: str, path: str) -> dict[str, Any]:
    """A copy of *environ* for ``method path`` with no body, for the same identity."""
    # WebOb caches the parsed request under webob.* keys; they describe the original
    # request and must go. Except adhoc_attrs: that is where frameworks keep request
    # attributes (Glance's context middleware stores req.context there).
    sub = {key: value for key, value in environ.items() if not key.startswith("webob.")}
    adhoc = environ.get("webob.adhoc_attrs")
    if isinstance(adhoc, dict):
        sub["webob.adhoc_attrs"] = dict(adhoc)
    for key in _DROPPED_HEADERS:
        sub.pop(key, None)
    sub.update(
        {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "CONTENT_LENGTH": "0",
            "HTTP_ACCEPT": "application/json",
            "wsgi.input": io.BytesIO(b""),
            SUBREQUEST_KEY: True,
        }
    )
    return sub


def _read_limited(app_iter: Iterable[bytes]) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in app_iter:
        chunks.append(chunk)
        size += len(chunk)
        if size > _BODY_LIMIT:
            break
    return b"".join(chunks)


def _discard(data: bytes) -> None:
    return None
