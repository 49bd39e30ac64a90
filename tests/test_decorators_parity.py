"""The decorated example app notifies exactly as the middleware-wrapped one does.

The same request sequence runs against ``NotificationMiddleware(ImageAPI)`` and
``decorated_image_api``, in the same data directory (an error message names a path),
and the notifications are compared: event types, priorities, order and payloads.
Only what a clock decides is left out: ``message_id``, ``timestamp`` and the
``created_at``/``updated_at``/``deleted_at`` values (whose presence is compared).

Where they cannot agree, the sequence does not go: a request no handler answers
(an unrouted path, a 405) emits nothing with the decorators, because the decorators
see handler calls, not HTTP exchanges.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from examples.image_api import ImageAPI
from examples.image_api.decorated import decorated_image_api
from instrument import Notifier
from instrument.middleware import NotificationMiddleware
from instrument.strategies.memory import MemoryStrategy
from instrument.testing import capture

from .wsgi import call

IDENTITY = {"X-Project-Id": "tenant-9", "X-User-Id": "alice"}
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch", **IDENTITY}
DATA = {"Content-Type": "application/octet-stream", **IDENTITY}
CLOCK_FIELDS = ("created_at", "updated_at", "deleted_at")


def image(image_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": image_id,
        "name": "cirros",
        "disk_format": "raw",
        "container_format": "bare",
        **fields,
    }


def run_sequence(app: Any, data_dir: Path) -> list[tuple[int, ...] | int]:
    """The sequence of the issue, plus the failures worth comparing; returns the statuses."""
    i1, i2 = "11111111-0000-4000-8000-000000000001", "22222222-0000-4000-8000-000000000002"
    codes: list[Any] = [
        call(app, "POST", "/v2/images", image(i1, tags=["a"]), IDENTITY).code,
        call(app, "PUT", f"/v2/images/{i1}/file", bytes(range(256)) * 20, DATA).code,
        call(app, "GET", f"/v2/images/{i1}/file", headers=IDENTITY).code,
        call(app, "GET", f"/v2/images/{i1}/file", headers={"Range": "bytes=100-199"}).code,
        call(app, "HEAD", f"/v2/images/{i1}/file").code,
        call(
            app,
            "PATCH",
            f"/v2/images/{i1}",
            b'[{"op": "add", "path": "/os_distro", "value": "cirros"}]',
            PATCH,
        ).code,
        call(app, "POST", f"/v2/images/{i1}/actions/deactivate", headers=IDENTITY).code,
        call(app, "POST", f"/v2/images/{i1}/actions/deactivate", headers=IDENTITY).code,
        call(app, "GET", f"/v2/images/{i1}/file").code,
        call(app, "POST", f"/v2/images/{i1}/actions/reactivate", headers=IDENTITY).code,
        call(app, "POST", f"/v2/images/{i1}/actions/reactivate", headers=IDENTITY).code,
        call(app, "PUT", f"/v2/images/{i1}/file", b"again", DATA).code,  # 409: not queued
        call(app, "POST", "/v2/images", image(i2, protected=True), IDENTITY).code,
        call(app, "GET", f"/v2/images/{i2}/file").code,  # 204: no data yet, nothing sent
        call(app, "PUT", f"/v2/images/{i2}/file", b"short", {**DATA, "Content-Length": "9"}).code,
        call(app, "PUT", "/v2/images/missing/file", b"data", DATA).code,  # 404
        call(app, "GET", "/v2/images/missing/file").code,  # 404
        call(app, "DELETE", f"/v2/images/{i2}").code,  # 403: protected
        call(app, "DELETE", f"/v2/images/{i1}", headers=IDENTITY).code,
    ]
    shutil.rmtree(data_dir)  # the store is gone: the upload raises
    with pytest.raises(FileNotFoundError):
        call(app, "PUT", f"/v2/images/{i2}/file", b"data", DATA, validate=False)
    data_dir.mkdir()
    return codes


def comparable(notification: Any) -> tuple[str, str, Any]:
    payload = notification.payload
    if isinstance(payload, dict):
        payload = {k: (v is not None if k in CLOCK_FIELDS else v) for k, v in payload.items()}
    return notification.event_type, notification.priority, payload


def notifications_of(app: Any, data_dir: Path) -> tuple[list[Any], list[Any]]:
    with capture() as captured:
        codes = run_sequence(app, data_dir)
    return codes, [comparable(n) for n in captured]


def test_decorated_app_emits_what_the_middleware_emits(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    middleware = NotificationMiddleware(ImageAPI(data_dir), Notifier(MemoryStrategy()))
    expected_codes, expected = notifications_of(middleware, data_dir)
    codes, actual = notifications_of(decorated_image_api(Notifier(), data_dir), data_dir)

    first_image = [201, 204, 200, 206, 200, 200, 204, 204, 403, 204, 204, 409]
    second_image = [201, 204, 400, 404, 404, 403, 204]
    assert codes == expected_codes == [*first_image, *second_image]
    assert [event[:2] for event in actual] == [event[:2] for event in expected]
    assert actual == expected


def test_the_sequence_covers_every_event_and_priority_the_issue_asks_for(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _, actual = notifications_of(decorated_image_api(Notifier(), data_dir), data_dir)
    assert [event[:2] for event in actual] == [
        ("image.create", "INFO"),
        ("image.prepare", "INFO"),
        ("image.upload", "INFO"),
        ("image.activate", "INFO"),
        ("image.send", "INFO"),  # full download
        ("image.send", "INFO"),  # ranged: 100 bytes; the HEAD emits nothing
        ("image.update", "INFO"),  # patch
        ("image.update", "INFO"),  # deactivate (again: no change, nothing)
        ("image.send", "WARN"),  # download of a deactivated image: 403
        ("image.update", "INFO"),  # reactivate (again: nothing)
        ("image.upload", "WARN"),  # 409, no prepare: the image is active
        ("image.create", "INFO"),
        ("image.prepare", "INFO"),
        ("image.upload", "ERROR"),  # 400 after prepare: the store was touched
        ("image.upload", "WARN"),  # 404, no prepare: unknown image
        ("image.send", "WARN"),  # 404
        ("image.delete", "WARN"),  # 403: protected
        ("image.delete", "INFO"),
        ("image.prepare", "INFO"),
        ("image.upload", "ERROR"),  # FileNotFoundError, re-raised
    ]
    sends = [payload for event, _, payload in actual if event == "image.send"]
    assert [send["bytes_sent"] for send in sends] == [5120, 100, 0, 0]
    assert actual[-1][2].startswith("image.upload failed for image 22222222-")
    assert "FileNotFoundError" in actual[-1][2]


def test_decorated_download_keeps_the_servers_file_wrapper(tmp_path: Path) -> None:
    """A server's ``wsgi.file_wrapper`` result stays an instance of it (sendfile path)."""
    from wsgiref.util import FileWrapper

    from .wsgi import make_environ

    app = decorated_image_api(Notifier(), tmp_path)
    call(app, "POST", "/v2/images", image("i3"), IDENTITY)
    call(app, "PUT", "/v2/images/i3/file", b"z" * 3000, DATA)
    environ = {**make_environ("GET", "/v2/images/i3/file"), "wsgi.file_wrapper": FileWrapper}
    with capture() as captured:
        body = app(environ, lambda status, headers, exc_info=None: None)
        assert isinstance(body, FileWrapper)
        assert b"".join(body) == b"z" * 3000
        body.close()
    assert [(n.event_type, n.priority, n.payload["bytes_sent"]) for n in captured] == [
        ("image.send", "INFO", 3000)
    ]
