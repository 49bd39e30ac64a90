"""What an image API request means: the events of each kind of request and their rules.

The middleware (from HTTP exchanges) and the decorators (from handler calls) both
decide with these functions, so the two front ends cannot drift apart:

- which events a kind of request emits on success, in Glance's order
  (:func:`success_events`, :func:`upload_events`);
- which event fails when it fails (:func:`failure_event`), and at which priority
  (:func:`failure_priority`): WARN for a 4xx, ERROR for a 5xx or an exception, and
  ERROR image.upload for any failure once image.prepare went out;
- image.prepare itself (:func:`emit_prepare`): only for an image that can take data;
- what an image import means once it ended (:func:`import_events`), learnt later
  (:mod:`instrument._imports`): the ``import`` kind emits nothing when it is answered.

The kinds are the route kinds of :mod:`instrument.routes` (``ignore`` aside).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from . import events as ev
from .images import prepared_image
from .payloads import error_payload

if TYPE_CHECKING:
    from .notifier import Notifier

__all__ = [
    "DATA_KINDS",
    "KIND_EVENTS",
    "MEMBER_KINDS",
    "emit_prepare",
    "failure_event",
    "failure_priority",
    "import_events",
    "problem_of",
    "report_failure",
    "status_unchanged",
    "success_events",
    "upload_events",
]

_DATA_EVENTS: Final = (ev.IMAGE_PREPARE, ev.IMAGE_UPLOAD, ev.IMAGE_ACTIVATE)

#: Kinds whose requests may carry image data (v1 create and update).
DATA_KINDS: Final = frozenset({"create_with_data", "update_with_data"})

#: Every event a kind may emit: a kind whose events are all disabled need not be watched.
KIND_EVENTS: Final = {
    "create": (ev.IMAGE_CREATE,),
    "create_with_data": (ev.IMAGE_CREATE, *_DATA_EVENTS),
    "update": (ev.IMAGE_UPDATE,),
    "update_with_data": (ev.IMAGE_UPDATE, *_DATA_EVENTS),
    # deactivate, reactivate: Glance saves (and reports) the image only if its status changed.
    "status_action": (ev.IMAGE_UPDATE,),
    "upload": _DATA_EVENTS,
    "delete": (ev.IMAGE_DELETE,),
    "send": (ev.IMAGE_SEND,),
    # A staged upload is not in a store yet: only its failure is reported.
    "stage": (ev.IMAGE_UPLOAD,),
    "import": _DATA_EVENTS,
    "member_create": (ev.IMAGE_MEMBER_CREATE,),
    "member_update": (ev.IMAGE_MEMBER_UPDATE,),
    "member_delete": (ev.IMAGE_MEMBER_DELETE,),
}

#: Kinds whose payload is an image member, not an image.
MEMBER_KINDS: Final = frozenset({"member_create", "member_update", "member_delete"})

#: The event a request of each kind is about: what succeeds, or fails, without data.
_MAIN_EVENT: Final = {
    "create": ev.IMAGE_CREATE,
    "create_with_data": ev.IMAGE_CREATE,
    "update": ev.IMAGE_UPDATE,
    "update_with_data": ev.IMAGE_UPDATE,
    "status_action": ev.IMAGE_UPDATE,
    "upload": ev.IMAGE_UPLOAD,
    "delete": ev.IMAGE_DELETE,
    "send": ev.IMAGE_SEND,
    "stage": ev.IMAGE_UPLOAD,
    "import": ev.IMAGE_UPLOAD,
    "member_create": ev.IMAGE_MEMBER_CREATE,
    "member_update": ev.IMAGE_MEMBER_UPDATE,
    "member_delete": ev.IMAGE_MEMBER_DELETE,
}


def status_unchanged(before: Any, after: Any) -> bool:
    """Both images show a status, the same one: a ``status_action`` that changed nothing
    (Glance saves, and so reports, a deactivated or reactivated image only on a change)."""
    if not (isinstance(before, Mapping) and isinstance(after, Mapping)):
        return False
    status = before.get("status")
    return status is not None and status == after.get("status")


def upload_events(image: Mapping[str, Any]) -> list[str]:
    """After data reached the store: image.upload, then image.activate if it is active."""
    if image.get("status") == "active":
        return [ev.IMAGE_UPLOAD, ev.IMAGE_ACTIVATE]
    return [ev.IMAGE_UPLOAD]


def success_events(kind: str, has_data: bool, image: Mapping[str, Any]) -> list[str]:
    """The INFO events of a successful request of *kind*, in Glance's order.

    image.prepare of ``upload`` and ``update_with_data`` is not here: it goes out
    before the data is passed on (:func:`emit_prepare`).
    """
    if kind == "create_with_data":
        return (
            [ev.IMAGE_CREATE, ev.IMAGE_PREPARE, *upload_events(image)]
            if has_data
            else [ev.IMAGE_CREATE]
        )
    if kind == "update_with_data":
        return [*upload_events(image), ev.IMAGE_UPDATE] if has_data else [ev.IMAGE_UPDATE]
    if kind == "upload":
        return upload_events(image)
    if kind in ("stage", "import"):
        return []  # nothing is in a store yet; an import is followed (import_events)
    return [_MAIN_EVENT[kind]]


def import_events(activated: bool) -> list[str]:
    """The INFO events of one store's import that ended well, in Glance's order.

    image.activate only for the import that made the image active (Glance emits it when
    the image was not active before the data: not for a copy-image to another store).
    """
    if activated:
        return [ev.IMAGE_PREPARE, ev.IMAGE_UPLOAD, ev.IMAGE_ACTIVATE]
    return [ev.IMAGE_PREPARE, ev.IMAGE_UPLOAD]


def failure_event(kind: str, has_data: bool = False) -> str:
    """The event a failed request of *kind* reports: the upload when data was sent."""
    if kind == "update_with_data" and has_data:
        return ev.IMAGE_UPLOAD
    return _MAIN_EVENT[kind]


def failure_priority(code: int, event: str = "", prepared: bool = False) -> str:
    """WARN for a 4xx, ERROR for a 5xx (give 500 for an exception).

    Once image.prepare went out the store was touched: Glance reports any failure
    after it as an ERROR image.upload, whatever the HTTP status.
    """
    if code >= 500 or (prepared and event == ev.IMAGE_UPLOAD):
        return ev.ERROR
    return ev.WARN


def problem_of(exc: BaseException) -> str:
    """The text an exception gives a WARN/ERROR payload: ``"Type: message"``."""
    return f"{type(exc).__name__}: {exc}"


def report_failure(
    notifier: Notifier, event: str, image_id: str | None, problem: str, priority: str
) -> None:
    """Emit *event* at *priority* with the text payload naming the image and the problem."""
    notifier.notify(priority, event, error_payload(event, image_id, problem))


def emit_prepare(notifier: Notifier, image: Mapping[str, Any], *, known: bool) -> bool:
    """image.prepare for *image* if it can take data; True if a later failure is an ERROR.

    Only a confirmed (*known*), uploadable image makes a later failure an ERROR
    image.upload: a bare id may still be refused before the store is touched.
    """
    prepared = prepared_image(image)
    if prepared is None:
        return False
    notifier.info(ev.IMAGE_PREPARE, prepared)
    return known
