"""What an image import meant, once it ended: the events, in Glance's order and shape.

``POST /v2/images/{id}/import`` is answered ``202`` before anything happens; Glance then
runs the import as a task in the background. :mod:`instrument._follower` learns the
outcome later through the application's own API (the image's tasks, then the image) and
hands both to :func:`import_outcome`, which decides what to emit:

- the task succeeded: for each store the image reached (in the order asked for),
  image.prepare, image.upload and, for the import that made the image active,
  image.activate (:func:`instrument.lifecycle.import_events`). A copy-image adds a store
  to an active image: no image.activate, as in Glance;
- a store in ``os_glance_failed_import`` (``all_stores_must_succeed = false``), or the
  task failed: one ERROR image.upload with a text payload naming the stores and the
  task's message. Glance itself only says ``task.failure`` there; an operator watching
  ``notifications.error`` must see a failed upload however it was started.

The payloads are read after the import, so image.prepare is made to look like the image
*before* the data as Glance sends it: status ``importing`` (a copy stays ``active``),
no checksum or hash yet, no size for data fetched from a URL, and Glance's import extras
(``backend``, ``os_glance_importing_to_stores``, ``os_glance_failed_import``); every
payload shows the import properties as they were during the import (the task's id in
``os_glance_import_task``, the store in ``os_glance_importing_to_stores``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final

from . import events as ev
from .lifecycle import import_events
from .payloads import error_payload

__all__ = ["Emission", "ImportRequest", "import_outcome", "import_request"]

#: Import methods whose data comes from a URL: the size is unknown before it arrives.
_FETCHING: Final = frozenset({"web-download", "glance-download"})
_COPY: Final = "copy-image"
#: Fields the image gets from its data: not known yet when Glance sends image.prepare.
_FROM_DATA: Final = ("checksum", "os_hash_algo", "os_hash_value", "virtual_size")

#: (priority, event type, payload)
Emission = tuple[str, str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class ImportRequest:
    """What the import request asked for (read from its small JSON body)."""

    method: str | None = None
    #: The stores asked for; empty: the default store (or all of them, see *all_stores*).
    stores: tuple[str, ...] = ()
    all_stores: bool = False


def import_request(document: Any) -> ImportRequest:
    """The :class:`ImportRequest` in a parsed import body; an empty one if it is not one."""
    if not isinstance(document, Mapping):
        return ImportRequest()
    method = document.get("method")
    name = method.get("name") if isinstance(method, Mapping) else None
    stores = document.get("stores")
    listed = tuple(s for s in stores if isinstance(s, str)) if isinstance(stores, list) else ()
    return ImportRequest(
        name if isinstance(name, str) else None, listed, document.get("all_stores") is True
    )


def import_outcome(
    request: ImportRequest,
    task: Mapping[str, Any],
    image: Mapping[str, Any] | None,
) -> list[Emission]:
    """The notifications an ended import means (see the module docstring).

    *task* is the import task as ``GET /v2/images/{id}/tasks`` shows it; *image* the image
    in notification shape plus the REST ``stores`` list (None when it could not be read:
    failures are still reported).
    """
    image_id = str(task.get("image_id") or (image or {}).get("id") or "") or None
    failed = _listed(image, "os_glance_failed_import")
    emitted: list[Emission] = []
    if task.get("status") == "success" and image is not None:
        activated = request.method != _COPY
        during = {"os_glance_import_task": task.get("id")}
        for store in _reached(request, image, failed):
            emitted += _store_events(
                request, _during(image, during, store), store, activated, failed
            )
            activated = False
    if task.get("status") != "success" or failed:
        stores = failed or list(request.stores) or ["the default store"]
        message = str(task.get("message") or "the import task failed")
        problem = f"import ({request.method or 'unknown method'}) to {', '.join(stores)}: {message}"
        emitted.append(
            (ev.ERROR, ev.IMAGE_UPLOAD, error_payload(ev.IMAGE_UPLOAD, image_id, problem))
        )
    return emitted


def _reached(request: ImportRequest, image: Mapping[str, Any], failed: Sequence[str]) -> list[str]:
    """The stores the import put the image in, in the order they were asked for."""
    present = _listed(image, "stores")
    if request.stores:
        return [store for store in request.stores if store in present and store not in failed]
    if request.method == _COPY:  # all_stores: every store it is in now, but the first
        return present[1:]
    if request.all_stores:
        return present
    return present[:1] if present else [""]  # "": a single-store Glance has no store names


def _store_events(
    request: ImportRequest,
    image: Mapping[str, Any],
    store: str,
    activated: bool,
    failed: list[str],
) -> list[Emission]:
    extras = {
        "os_glance_importing_to_stores": [store] if store else [],
        "os_glance_failed_import": failed,
    }
    after = {k: v for k, v in image.items() if k != "stores"}
    before = {**after, **extras, "backend": store or None}
    if request.method != _COPY:
        before.update(dict.fromkeys(_FROM_DATA), status="importing")
        if request.method in _FETCHING:
            before["size"] = None
    payloads = {ev.IMAGE_PREPARE: before, ev.IMAGE_UPLOAD: {**after, **extras}}
    return [(ev.INFO, event, payloads.get(event, after)) for event in import_events(activated)]


def _during(image: Mapping[str, Any], during: dict[str, Any], store: str) -> dict[str, Any]:
    """*image* with the import properties Glance shows while it imports to *store*."""
    properties = {**(image.get("properties") or {}), **during}
    properties["os_glance_importing_to_stores"] = store
    return {**image, "properties": properties}


def _listed(image: Mapping[str, Any] | None, key: str) -> list[str]:
    """A comma-separated image property (``stores``, ``os_glance_*``) as a list."""
    if image is None:
        return []
    value = image.get(key)
    if value is None:
        value = (image.get("properties") or {}).get(key)
    return [part.strip() for part in str(value or "").split(",") if part.strip()]
