"""Import and member requests in the filter: what the middleware reads around them.

The middleware (:mod:`instrument.middleware`) decides *when*; this module knows *what*:

- **Imports**: the options that bound the follower (:mod:`instrument._follower`), and
  the import request's small JSON body, read before the application runs and put back
  for it (:func:`read_import_request`): the methods and stores asked for decide which
  events the import's end means (:mod:`instrument._imports`).
- **Members**: Glance's image.member.delete payload shows the member as it was, so the
  member is asked of the application before it is removed (:func:`member_before`, one
  internal subrequest, only with ``image_lookup``); after a success the event and its
  payload come from the response, or from what was asked before a delete
  (:func:`member_notification`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

from ._imports import ImportRequest, import_request
from ._subrequest import get_document
from ._wsgi import Environ, WSGIApp
from .config import Settings
from .images import deleted_member, member_from_body, parse_json
from .lifecycle import KIND_EVENTS
from .options import Option, integer, number
from .routes import Match

__all__ = [
    "IMPORT_OPTIONS",
    "follower_settings",
    "member_before",
    "member_notification",
    "peek_json",
    "read_import_request",
]

IMPORT_TIMEOUT_OPTION: Final = Option(
    "import_timeout",
    3600.0,
    "Seconds an accepted image import is followed to its end; after that its events "
    "are not sent (counted and logged).",
    number(minimum=1),
)
IMPORT_RATE_OPTION: Final = Option(
    "import_lookups_per_second",
    2.0,
    "Internal subrequests per second, for all imports together, to learn how imports ended.",
    number(minimum=0.01),
)
IMPORT_MAX_OPTION: Final = Option(
    "import_max_followed",
    100,
    "Imports followed at once per process; more are not followed (counted and logged).",
    integer(minimum=1),
)
IMPORT_OPTIONS: Final = (IMPORT_TIMEOUT_OPTION, IMPORT_RATE_OPTION, IMPORT_MAX_OPTION)

log = logging.getLogger("instrument.middleware")  # the filter's own lookups log there

#: An import request's body is a small JSON document; a larger one is not read.
_IMPORT_BODY_LIMIT: Final = 64 * 1024


def follower_settings(settings: Settings) -> dict[str, Any]:
    """The import follower's keyword arguments, read (and so validated) from *settings*."""
    return {
        "timeout": settings.get(IMPORT_TIMEOUT_OPTION),
        "lookups_per_second": settings.get(IMPORT_RATE_OPTION),
        "max_followed": settings.get(IMPORT_MAX_OPTION),
    }


def read_import_request(environ: Environ) -> ImportRequest:
    """What the import request asks for, and when, its body left for the application."""
    return dataclasses.replace(import_request(peek_json(environ)), asked_at=time.time())


def peek_json(environ: Environ) -> Any:
    """The request's small JSON body, read and put back for the application; else None.

    Only a body with a ``Content-Length`` up to 64 KiB is read: the application then
    reads the very same bytes from a fresh stream.
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 < length <= _IMPORT_BODY_LIMIT:
        return None
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        return parse_json(body)
    except ValueError:
        return None


def member_before(app: WSGIApp, environ: Environ, match: Match, lookup: bool) -> dict[str, Any]:
    """The member about to be removed (Glance's payload shows it), else its ids."""
    known: dict[str, Any] = {"image_id": match.image_id, "member_id": match.member_id}
    if not lookup:
        return known
    try:
        status, document = get_document(app, environ, match.member_path())
    except Exception:  # the removal itself is the application's to answer
        log.warning("instrument: lookup of member %s failed", match.member_path(), exc_info=True)
        return known
    member = member_from_body(_json_bytes(document)) if status.startswith("2") else None
    return member or known


def member_notification(
    kind: str, before: Mapping[str, Any] | None, body: bytes | None
) -> tuple[str, dict[str, Any]] | None:
    """The event and payload of a member request that succeeded; None if unknown."""
    event = KIND_EVENTS[kind][0]
    if kind == "member_delete":
        return event, deleted_member(before or {})
    member = member_from_body(body or b"")
    return None if member is None else (event, member)


def _json_bytes(document: Any) -> bytes:
    return json.dumps(document).encode() if isinstance(document, dict) else b""
