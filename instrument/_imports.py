"""What an image import meant, once it ended: the events, in Glance's order and shape.

``POST /v2/images/{id}/import`` is answered ``202`` before anything happens; Glance then
runs the import as a task in the background. :mod:`instrument._follower` learns the
outcome later through the application's own API (the image's tasks, then the image) and
hands both to :func:`import_outcome`, which decides what to emit:

- the task succeeded: for each store the image reached (in the order asked for),
  image.prepare, image.upload and, for the store that made the image active,
  image.activate (:func:`instrument.lifecycle.import_events`): the last one when every
  store must succeed (``all_stores_must_succeed``, Glance's default: the image stays
  ``importing`` until then), else the first. A copy-image adds stores to an active
  image: no image.activate, as in Glance;
- a store of this import in ``os_glance_failed_import`` (``all_stores_must_succeed =
  false``), or the task failed: one ERROR image.upload with a text payload naming the
  stores and the task's message. Glance itself only says ``task.failure`` there; an
  operator watching ``notifications.error`` must see a failed upload however it was
  started.

The stores an import targets are the ones Glance's task was given (its ``input``'s
``backend``, which the tasks API shows): a copy-image to all stores skips those the
image was in already, and a store that failed in an earlier import is not this one's.
An application whose tasks do not show it is read from the request and the image.

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
    #: ``all_stores_must_succeed`` (Glance's default: true).
    all_must_succeed: bool = True
    #: When the request arrived (wall clock), to tell its task from earlier ones.
    asked_at: float = 0.0


def import_request(document: Any) -> ImportRequest:
    """The :class:`ImportRequest` in a parsed import body; an empty one if it is not one."""
    if not isinstance(document, Mapping):
        return ImportRequest()
    method = document.get("method")
    name = method.get("name") if isinstance(method, Mapping) else None
    stores = document.get("stores")
    listed = tuple(s for s in stores if isinstance(s, str)) if isinstance(stores, list) else ()
    return ImportRequest(
        name if isinstance(name, str) else None,
        listed,
        document.get("all_stores") is True,
        document.get("all_stores_must_succeed") is not False,
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
    targets = _targets(task)
    failed = _listed(image, "os_glance_failed_import")
    asked = targets if targets is not None else list(request.stores)
    if asked:  # a store that failed in an earlier import is not this one's
        failed = [store for store in failed if store in asked]
    succeeded = task.get("status") == "success"
    emitted: list[Emission] = []
    if succeeded and image is not None:
        reached = _reached(request, targets, image, failed)
        order = targets if targets is not None else reached
        for index, store in enumerate(reached):
            pending = order[order.index(store) :]  # reached is a part of order
            emitted += _store_events(request, image, task, store, index, len(reached), pending)
    if not succeeded or failed:
        stores = failed or asked or ["the default store"]
        if succeeded:
            message = "the data did not reach these stores (all_stores_must_succeed = false)"
        else:
            message = str(task.get("message") or "the import task failed")
        problem = f"import ({request.method or 'unknown method'}) to {', '.join(stores)}: {message}"
        emitted.append(
            (ev.ERROR, ev.IMAGE_UPLOAD, error_payload(ev.IMAGE_UPLOAD, image_id, problem))
        )
    return emitted


def _targets(task: Mapping[str, Any]) -> list[str] | None:
    """The stores Glance gave the import task (``""``: a single-store Glance), or None."""
    given = task.get("input")
    backend = given.get("backend") if isinstance(given, Mapping) else None
    if not isinstance(backend, list) or not backend:
        return None
    return [store if isinstance(store, str) else "" for store in backend]


def _reached(
    request: ImportRequest,
    targets: Sequence[str] | None,
    image: Mapping[str, Any],
    failed: Sequence[str],
) -> list[str]:
    """The stores the import put the image in, in the order they were imported to."""
    present = _listed(image, "stores")
    if targets is not None:
        return [s for s in targets if (not s or s in present) and s not in failed]
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
    task: Mapping[str, Any],
    store: str,
    index: int,
    count: int,
    pending: list[str],
) -> list[Emission]:
    """The events of the *index*-th of *count* stores reached, as Glance sends them.

    *pending* are the stores Glance still lists in ``os_glance_importing_to_stores``
    while it imports to *store* (this one and those after it).
    """
    copying = request.method == _COPY
    # With every store required, Glance keeps the image importing until the last one.
    waits_for_last = not copying and request.all_must_succeed
    activates = not copying and index == (count - 1 if waits_for_last else 0)
    pending = [s for s in pending if s]  # "": a single-store Glance names no store
    properties = {
        **(image.get("properties") or {}),
        "os_glance_import_task": task.get("id"),
        "os_glance_importing_to_stores": ",".join(pending),
    }
    after = {k: v for k, v in image.items() if k != "stores"}
    after["properties"] = properties
    extras = {
        "os_glance_importing_to_stores": pending,
        "os_glance_failed_import": _listed(image, "os_glance_failed_import"),
    }
    uploaded = {**after, **extras}
    if waits_for_last and index < count - 1:
        uploaded["status"] = "importing"
    prepared = {**uploaded}
    if store:  # Glance names the store only when there is one (multi-store)
        prepared["backend"] = store
    if not copying and (index == 0 or waits_for_last):
        prepared["status"] = "importing"
    if not copying and index == 0:  # before the data: nothing it gives is known yet
        prepared.update(dict.fromkeys(_FROM_DATA))
        if request.method in _FETCHING:
            prepared["size"] = None
    payloads = {ev.IMAGE_PREPARE: prepared, ev.IMAGE_UPLOAD: uploaded}
    return [(ev.INFO, event, payloads.get(event, after)) for event in import_events(activates)]


def _listed(image: Mapping[str, Any] | None, key: str) -> list[str]:
    """A comma-separated image property (``stores``, ``os_glance_*``) as a list."""
    if image is None:
        return []
    value = image.get(key)
    if value is None:
        value = (image.get("properties") or {}).get(key)
    return [part.strip() for part in str(value or "").split(",") if part.strip()]
