"""The middleware on Glance's v2 routes, in process, under wsgiref.validate."""

from __future__ import annotations

import json
import logging
import shutil
from typing import Any

import pytest

from examples.image_api import ImageAPI
from instrument import Notifier
from instrument.middleware import NotificationMiddleware
from instrument.strategies.memory import MemoryStrategy
from instrument.testing import CapturedNotifications

from .wsgi import call

PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
IDENTITY = {"X-Project-Id": "tenant-9", "X-User-Id": "alice", "X-Auth-Token": "t0k"}


class Counting:
    """Wraps the app and records every environ it sees (subrequests included)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.seen.append(dict(environ))
        return self.app(environ, start_response)


@pytest.fixture
def api(tmp_path: Any) -> ImageAPI:
    return ImageAPI(tmp_path)


@pytest.fixture
def app(api: ImageAPI) -> NotificationMiddleware:
    return NotificationMiddleware(api, Notifier(MemoryStrategy()))


def create(app: Any, **fields: Any) -> str:
    body = {"name": "cirros", "disk_format": "qcow2", "container_format": "bare", **fields}
    reply = call(app, "POST", "/v2/images", body, IDENTITY)
    assert reply.code == 201, reply.body
    image_id: str = reply.json()["id"]
    return image_id


def test_create_emits_image_create_with_metadata_from_the_body(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = create(app, tags=["x"])
    assert notifications.events == [("image.create", "INFO")]
    payload = notifications[0].payload
    assert payload["id"] == image_id and payload["name"] == "cirros"
    assert payload["status"] == "queued" and payload["owner"] == "tenant-9"
    assert payload["visibility"] == "shared" and payload["is_public"] is False
    assert payload["tags"] == ["x"] and payload["deleted"] is False
    assert "self" not in payload and "file" not in payload


@pytest.mark.parametrize("name", ["properties", "is_public"])
def test_an_extra_property_named_like_a_v1_field_is_an_extra_property(
    notifications: CapturedNotifications, name: str
) -> None:
    """v2 accepts any extra property name Glance does not reserve: "properties" used to
    stop every notification of the image (and bill its downloads to nobody), "is_public"
    to replace Glance's computed boolean with the user's string."""
    image = {"id": "i-1", "status": "active", "visibility": "private", "owner": "tenant-9"}
    image[name] = "True"  # every v2 extra property is a string

    def glance_like(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"].endswith("/file"):
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return [b"data"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(image).encode()]

    app = NotificationMiddleware(glance_like, Notifier(MemoryStrategy()))
    call(app, "PATCH", "/v2/images/i-1", [], PATCH)
    call(app, "GET", "/v2/images/i-1/file")
    assert notifications.events == [("image.update", "INFO"), ("image.send", "INFO")]
    updated = notifications[0].payload
    assert updated["properties"] == {name: "True"}
    assert updated["is_public"] is False and updated["visibility"] == "private"
    assert notifications[1].payload["owner_id"] == "tenant-9"


def test_upload_emits_prepare_before_the_data_then_upload_and_activate(
    api: ImageAPI, notifications: CapturedNotifications
) -> None:
    stored_when_prepared: list[int] = []

    class Watching(MemoryStrategy):
        def emit(self, notification: Any) -> None:
            if notification.event_type == "image.prepare":
                stored = api.data_path(notification.payload["id"])
                stored_when_prepared.append(stored.stat().st_size if stored.exists() else 0)
            super().emit(notification)

    app = NotificationMiddleware(api, Notifier(Watching()))
    image_id = create(app)
    notifications.clear()
    reply = call(
        app,
        "PUT",
        f"/v2/images/{image_id}/file",
        b"x" * 1000,
        {"Content-Type": "application/octet-stream", **IDENTITY},
    )
    assert reply.code == 204
    assert notifications.events == [
        ("image.prepare", "INFO"),
        ("image.upload", "INFO"),
        ("image.activate", "INFO"),
    ]
    assert stored_when_prepared == [0], "prepare is emitted before the app has any of the data"
    prepare, upload, activate = notifications
    assert prepare.payload["status"] == "saving", "Glance reports the image as saving at prepare"
    assert upload.payload["status"] == "active" and upload.payload["size"] == 1000
    assert activate.payload == upload.payload


def test_upload_of_an_image_seen_through_the_filter_asks_nothing_before_the_data(
    api: ImageAPI, notifications: CapturedNotifications
) -> None:
    counting = Counting(api)
    app = NotificationMiddleware(counting, Notifier())
    image_id = create(app)
    counting.seen.clear()
    notifications.clear()
    call(
        app,
        "PUT",
        f"/v2/images/{image_id}/file",
        b"x" * 10,
        {"Content-Type": "application/octet-stream"},
    )
    methods = [environ["REQUEST_METHOD"] for environ in counting.seen]
    assert methods == ["PUT", "GET"], "one lookup, after the upload (its size and checksum)"
    assert notifications.event_types == ["image.prepare", "image.upload", "image.activate"]
    assert notifications[0].payload["id"] == image_id
    assert notifications[0].payload["status"] == "saving"


def test_an_upload_refused_before_its_data_is_read_is_not_prepared(
    api: ImageAPI, notifications: CapturedNotifications
) -> None:
    app = NotificationMiddleware(api, Notifier())
    image_id = create(app)  # seen as queued
    api.images[image_id]["status"] = "killed"  # changed behind the filter's back
    notifications.clear()
    reply = call(app, "PUT", f"/v2/images/{image_id}/file", b"data")
    assert reply.code == 409
    assert notifications.events == [("image.upload", "WARN")]


def test_an_upload_whose_store_fails_before_reading_is_prepared_then_an_error(
    tmp_path: Any, notifications: CapturedNotifications
) -> None:
    api = ImageAPI(tmp_path / "data")
    app = NotificationMiddleware(api, Notifier())
    image_id = create(app)  # seen as queued
    shutil.rmtree(tmp_path / "data")  # the store is gone: the upload fails before a read
    notifications.clear()
    with pytest.raises(FileNotFoundError):
        call(app, "PUT", f"/v2/images/{image_id}/file", b"data", validate=False)
    assert notifications.events == [("image.prepare", "INFO"), ("image.upload", "ERROR")]


def test_an_upload_taken_without_reading_is_prepared_before_it_is_reported(
    notifications: CapturedNotifications,
) -> None:
    def lazy_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "POST":
            start_response("201 Created", [("Content-Type", "application/json")])
            return [b'{"id": "i1", "status": "queued"}']
        if method == "GET":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"id": "i1", "status": "active", "size": 0}']
        start_response("204 No Content", [])  # an empty upload: nothing to read
        return []

    app = NotificationMiddleware(lazy_app, Notifier())
    call(app, "POST", "/v2/images", b"{}", {"Content-Type": "application/json"})
    notifications.clear()
    call(app, "PUT", "/v2/images/i1/file", b"")
    assert notifications.event_types == ["image.prepare", "image.upload", "image.activate"]


def test_upload_to_an_image_that_is_not_active_afterwards_emits_no_activate(
    notifications: CapturedNotifications,
) -> None:
    def saving_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"id": "i1", "status": "saving"}']
        start_response("204 No Content", [])
        return []

    app = NotificationMiddleware(saving_app, Notifier())
    call(app, "PUT", "/v2/images/i1/file", b"data")
    assert notifications.event_types == ["image.prepare", "image.upload"]


def test_upload_of_an_unknown_image_warns_upload_and_skips_prepare(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    reply = call(app, "PUT", "/v2/images/nope/file", b"data")
    assert reply.code == 404
    assert notifications.events == [("image.upload", "WARN")]
    assert notifications[0].payload == "image.upload failed for image nope: 404 Not Found"


def test_upload_conflict_warns_with_text_naming_event_image_and_status(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = create(app)
    call(app, "PUT", f"/v2/images/{image_id}/file", b"once")
    notifications.clear()
    reply = call(app, "PUT", f"/v2/images/{image_id}/file", b"twice")
    assert reply.code == 409
    assert notifications.events == [("image.upload", "WARN")]
    assert notifications[0].payload == f"image.upload failed for image {image_id}: 409 Conflict"


def test_patch_emits_update_with_the_new_metadata(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = create(app)
    notifications.clear()
    changes = [
        {"op": "replace", "path": "/name", "value": "cirros-0.6"},
        {"op": "add", "path": "/hw_disk_bus", "value": "scsi"},
    ]
    call(app, "PATCH", f"/v2/images/{image_id}", _json_bytes(changes), PATCH)
    assert notifications.events == [("image.update", "INFO")]
    assert notifications[0].payload["name"] == "cirros-0.6"
    assert notifications[0].payload["properties"] == {"hw_disk_bus": "scsi"}


@pytest.mark.parametrize(
    ("action", "status"), [("deactivate", "deactivated"), ("reactivate", "active")]
)
def test_actions_emit_update_with_metadata_looked_up_after(
    app: NotificationMiddleware, notifications: CapturedNotifications, action: str, status: str
) -> None:
    image_id = create(app)
    call(app, "PUT", f"/v2/images/{image_id}/file", b"data")
    if action == "reactivate":
        call(app, "POST", f"/v2/images/{image_id}/actions/deactivate")
    notifications.clear()
    reply = call(app, "POST", f"/v2/images/{image_id}/actions/{action}")
    assert reply.code == 204
    assert notifications.events == [("image.update", "INFO")]
    assert notifications[0].payload["status"] == status


@pytest.mark.parametrize("action", ["deactivate", "reactivate"])
def test_an_action_that_changes_no_status_emits_nothing_as_in_glance(
    app: NotificationMiddleware, notifications: CapturedNotifications, action: str
) -> None:
    """Glance saves, and so reports, a deactivated or reactivated image only when its
    status changed: deactivating an image twice is one image.update."""
    image_id = create(app)
    call(app, "PUT", f"/v2/images/{image_id}/file", b"data")
    if action == "reactivate":
        call(app, "POST", f"/v2/images/{image_id}/actions/deactivate")
        call(app, "POST", f"/v2/images/{image_id}/actions/reactivate")
    else:
        call(app, "POST", f"/v2/images/{image_id}/actions/deactivate")
    notifications.clear()
    assert call(app, "POST", f"/v2/images/{image_id}/actions/{action}").code == 204
    assert notifications.events == []


def test_tags_added_and_removed_emit_update_and_the_delete_shows_the_last_tags(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = create(app, tags=["old"])
    notifications.clear()
    assert call(app, "PUT", f"/v2/images/{image_id}/tags/gold").code == 204
    assert call(app, "DELETE", f"/v2/images/{image_id}/tags/old").code == 204
    assert notifications.events == [("image.update", "INFO")] * 2
    assert notifications[0].payload["tags"] == ["old", "gold"]
    assert notifications[1].payload["tags"] == ["gold"]
    assert call(app, "DELETE", f"/v2/images/{image_id}/tags/absent").code == 404
    assert notifications.events[-1] == ("image.update", "WARN")
    call(app, "DELETE", f"/v2/images/{image_id}")
    assert notifications[-1].event_type == "image.delete"
    assert notifications[-1].payload["tags"] == ["gold"]


def test_an_owner_changed_behind_the_filter_shows_in_downloads_after_max_age(
    api: ImageAPI, notifications: CapturedNotifications
) -> None:
    from instrument._seen import SeenImages

    app = NotificationMiddleware(api, Notifier())
    now = [0.0]
    app.seen = SeenImages(1024, max_age=60.0, clock=lambda: now[0])
    image_id = create(app)
    call(app, "PUT", f"/v2/images/{image_id}/file", b"data")  # remembered: active, tenant-9
    api.images[image_id]["owner"] = "tenant-new"  # an administrator, through another worker
    notifications.clear()
    call(app, "GET", f"/v2/images/{image_id}/file")
    now[0] = 60.0
    call(app, "GET", f"/v2/images/{image_id}/file")
    owners = [n.payload["owner_id"] for n in notifications if n.event_type == "image.send"]
    assert owners == ["tenant-9", "tenant-new"]


_CREATED = b'{"id": "i1", "name": "cirros", "status": "queued"}'
_DATA = b"x" * 1000


def _writes_then_returns(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A legacy application: its whole body through write(), nothing returned."""
    body = _CREATED if environ["REQUEST_METHOD"] == "POST" else _DATA
    kind = "application/json" if body is _CREATED else "application/octet-stream"
    status = "201 Created" if body is _CREATED else "200 OK"
    write = start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    write(body[:10])
    write(body[10:])
    return []


def _writes_while_iterated(environ: dict[str, Any], start_response: Any) -> Any:
    """start_response and write() called lazily, from the body's iteration."""
    if environ["REQUEST_METHOD"] == "POST":
        start_response("201 Created", [("Content-Type", "application/json")])(_CREATED)
        yield b""
        return
    kind = ("Content-Type", "application/octet-stream")
    write = start_response("200 OK", [kind, ("Content-Length", str(len(_DATA)))])
    for start in range(0, len(_DATA), 100):
        write(_DATA[start : start + 100])
        yield b""


@pytest.mark.parametrize("legacy", [_writes_then_returns, _writes_while_iterated])
def test_bodies_sent_through_pep_3333_write_are_read_and_counted(
    legacy: Any, notifications: CapturedNotifications
) -> None:
    app = NotificationMiddleware(legacy, Notifier(), image_lookup=False)
    assert call(app, "POST", "/v2/images", b"{}", {"Content-Type": "application/json"}).code == 201
    assert call(app, "GET", "/v2/images/i1/file").code == 200
    assert notifications.events == [("image.create", "INFO"), ("image.send", "INFO")]
    assert notifications[0].payload["name"] == "cirros"
    assert notifications[1].payload["bytes_sent"] == len(_DATA)


def test_delete_emits_the_metadata_looked_up_before_the_delete(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = create(app, name="doomed")
    notifications.clear()
    assert call(app, "DELETE", f"/v2/images/{image_id}").code == 204
    assert notifications.events == [("image.delete", "INFO")]
    payload = notifications[0].payload
    assert payload["id"] == image_id and payload["name"] == "doomed"
    assert payload["status"] == "deleted" and payload["deleted"] is True and payload["deleted_at"]


def test_delete_of_a_protected_image_warns(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = create(app, protected=True)
    notifications.clear()
    assert call(app, "DELETE", f"/v2/images/{image_id}").code == 403
    assert notifications.events == [("image.delete", "WARN")]
    assert "403 Forbidden" in notifications[0].payload


def test_download_emits_send_with_owner_receiver_and_bytes(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = create(app)
    call(app, "PUT", f"/v2/images/{image_id}/file", b"y" * 5000)
    notifications.clear()
    reply = call(
        app, "GET", f"/v2/images/{image_id}/file", headers={"X-Tenant-Id": "t2", "X-User-Id": "bob"}
    )
    assert reply.body == b"y" * 5000
    assert notifications.events == [("image.send", "INFO")]
    assert notifications[0].payload == {
        "image_id": image_id,
        "owner_id": "tenant-9",
        "receiver_tenant_id": "t2",
        "receiver_user_id": "bob",
        "destination_ip": "192.0.2.10",
        "bytes_sent": 5000,
    }


def test_ranged_download_is_info_with_the_range_length(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = create(app)
    call(app, "PUT", f"/v2/images/{image_id}/file", bytes(range(256)) * 10)
    notifications.clear()
    reply = call(app, "GET", f"/v2/images/{image_id}/file", headers={"Range": "bytes=100-199"})
    assert reply.code == 206 and reply.body == (bytes(range(256)) * 10)[100:200]
    assert notifications.events == [("image.send", "INFO")]
    assert notifications[0].payload["bytes_sent"] == 100


def test_download_of_a_missing_image_warns_send_with_zero_bytes(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    assert call(app, "GET", "/v2/images/missing/file").code == 404
    assert notifications.events == [("image.send", "WARN")]
    assert notifications[0].payload["bytes_sent"] == 0


def test_locations_and_direct_url_never_reach_a_payload(
    notifications: CapturedNotifications,
) -> None:
    def leaky(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "application/json")])
        return [
            b'{"id": "i", "direct_url": "rbd://key@pool/i", "locations": [{"url": "s3://k"}],'
            b' "location": "swift://k"}'
        ]

    call(NotificationMiddleware(leaky, Notifier()), "POST", "/v2/images", {})
    assert notifications[0].payload == {
        "id": "i",
        "properties": {},
        "deleted": False,
        "deleted_at": None,
    }


def test_read_only_requests_emit_nothing_and_pass_straight_through(
    api: ImageAPI, notifications: CapturedNotifications
) -> None:
    counting = Counting(api)
    app = NotificationMiddleware(counting, Notifier())
    image_id = create(app)
    notifications.clear()
    counting.seen.clear()
    for path in ["/versions", "/v2/images", f"/v2/images/{image_id}", "/v2/schemas/image"]:
        call(app, "GET", path)
    call(app, "HEAD", f"/v2/images/{image_id}/file")
    assert list(notifications) == []
    assert len(counting.seen) == 5, "no subrequests for requests that are not events"


def test_disabled_events_cost_no_subrequest(
    api: ImageAPI, notifications: CapturedNotifications
) -> None:
    counting = Counting(api)
    app = NotificationMiddleware(counting, Notifier(disabled_notifications=["image.delete"]))
    image_id = create(app)
    counting.seen.clear()
    call(app, "DELETE", f"/v2/images/{image_id}")
    assert len(counting.seen) == 1
    assert notifications.event_types == ["image.create"]


def test_subrequest_keeps_identity_and_is_never_sent_to_the_client(
    api: ImageAPI, notifications: CapturedNotifications
) -> None:
    counting = Counting(api)
    app = NotificationMiddleware(counting, Notifier())
    image_id = create(api)  # not through the filter: it has not seen the image
    counting.seen.clear()
    reply = call(app, "DELETE", f"/v2/images/{image_id}", headers=IDENTITY)
    assert reply.body == b"" and reply.code == 204
    lookup, delete = counting.seen
    assert (lookup["REQUEST_METHOD"], lookup["PATH_INFO"]) == ("GET", f"/v2/images/{image_id}")
    assert lookup["HTTP_X_AUTH_TOKEN"] == "t0k" and lookup["HTTP_X_PROJECT_ID"] == "tenant-9"
    assert lookup["wsgi.input"] is not delete["wsgi.input"]
    assert delete["REQUEST_METHOD"] == "DELETE", "the original environ is not modified"


def test_a_failing_lookup_degrades_to_the_id_and_is_logged(
    caplog: pytest.LogCaptureFixture, notifications: CapturedNotifications
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            raise RuntimeError("database gone")
        start_response("204 No Content", [])
        return []

    with caplog.at_level(logging.WARNING, logger="instrument.middleware"):
        call(NotificationMiddleware(app, Notifier()), "DELETE", "/v2/images/i7")
    assert notifications.events == [("image.delete", "INFO")]
    assert (
        notifications[0].payload["id"] == "i7" and notifications[0].payload["status"] == "deleted"
    )
    assert "metadata lookup for image i7 failed" in caplog.text


def test_server_error_is_error_and_an_exception_is_error_and_reraised_unchanged(
    notifications: CapturedNotifications,
) -> None:
    boom = ValueError("store exploded")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "PATCH":
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"busy"]
        raise boom

    middleware = NotificationMiddleware(app, Notifier())
    reply = call(middleware, "PATCH", "/v2/images/i1", b"[]", PATCH)
    assert (reply.code, reply.body) == (503, b"busy")
    with pytest.raises(ValueError) as caught:
        call(middleware, "POST", "/v2/images", {}, validate=False)
    assert caught.value is boom
    assert notifications.events == [("image.update", "ERROR"), ("image.create", "ERROR")]
    assert notifications[0].payload == "image.update failed for image i1: 503 Service Unavailable"
    assert notifications[1].payload == (
        "image.create failed for an unidentified image: ValueError: store exploded"
    )


@pytest.mark.parametrize(
    ("script_name", "path"),
    [("/image", "/v2/images"), ("", "/image/v2/images"), ("", "/v2/images/"), ("", "/v2.1/images")],
)
def test_mounted_prefixes_trailing_slashes_and_version_aliases(
    notifications: CapturedNotifications, script_name: str, path: str
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "application/json")])
        return [b'{"id": "i1", "status": "queued"}']

    call(NotificationMiddleware(app, Notifier()), "POST", path, {}, script_name=script_name)
    assert notifications.events == [("image.create", "INFO")]


def test_lookup_goes_to_the_same_prefix_and_version(notifications: CapturedNotifications) -> None:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}")
        start_response("204 No Content", [])
        return []

    call(NotificationMiddleware(app, Notifier()), "DELETE", "/image/v2.1/images/i1")
    assert seen == ["GET /image/v2.1/images/i1", "DELETE /image/v2.1/images/i1"]


def _json_bytes(document: Any) -> bytes:
    import json

    return json.dumps(document).encode()


def test_a_failure_after_prepare_is_an_error_upload_whatever_the_status(
    notifications: CapturedNotifications,
) -> None:
    """Glance emits image.upload at ERROR once the store was touched, even for a 400."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"id": "i1", "status": "queued"}']
        environ["wsgi.input"].read(4)  # fewer bytes than the application expected
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"short body"]

    call(NotificationMiddleware(app, Notifier()), "PUT", "/v2/images/i1/file", b"data")
    assert notifications.events == [("image.prepare", "INFO"), ("image.upload", "ERROR")]
    assert notifications[1].payload == "image.upload failed for image i1: 400 Bad Request"


@pytest.mark.parametrize("seen", [False, True])
def test_a_refused_upload_is_reported_alike_from_memory_or_from_a_lookup(
    notifications: CapturedNotifications, seen: bool
) -> None:
    """Whether the filter remembers the image must not change what a request reports."""
    refusal = {"status": "409 Conflict"}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"id": "i1", "status": "queued"}']
        start_response(refusal["status"], [("Content-Type", "text/plain")])
        return [b"refused before the data"]

    filtered = NotificationMiddleware(app, Notifier())
    if seen:
        filtered.seen.remember({"id": "i1", "status": "queued"})
    call(filtered, "PUT", "/v2/images/i1/file", b"data")
    refusal["status"] = "413 Request Entity Too Large"  # the store's size or quota limit
    call(filtered, "PUT", "/v2/images/i1/file", b"data")
    assert notifications.events == [
        ("image.upload", "WARN"),
        ("image.prepare", "INFO"),
        ("image.upload", "ERROR"),
    ]


def test_with_prepare_disabled_a_failure_after_the_data_is_still_an_error(
    notifications: CapturedNotifications,
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(4)
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"short body"]

    notifier = Notifier(disabled_notifications=["image.prepare"])
    call(NotificationMiddleware(app, notifier), "PUT", "/v2/images/i1/file", b"data")
    assert notifications.events == [("image.upload", "ERROR")]


def test_download_of_an_image_without_data_204_emits_nothing(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    """Glance answers 204 for an image that has no data yet: nothing was sent."""
    image_id = create(app)
    notifications.clear()
    assert call(app, "GET", f"/v2/images/{image_id}/file").code == 204
    assert list(notifications) == []


def test_lifecycle_response_keeps_its_length_so_servers_keep_content_length() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "application/json")])
        return [b'{"id": "i1"}']

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v2/images", "CONTENT_LENGTH": "2"}
    result = NotificationMiddleware(app, Notifier())(environ, lambda *args: None)
    assert len(result) == 1  # type: ignore[arg-type]
    getattr(result, "close", lambda: None)()  # a list comes back as it is, without close()


def test_download_whose_iterable_fails_to_iterate_is_closed_once(
    notifications: CapturedNotifications,
) -> None:
    closes: list[int] = []

    class Broken:
        def __iter__(self) -> Any:
            raise OSError("store unreachable")

        def close(self) -> None:
            closes.append(1)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] == "GET" and not environ["PATH_INFO"].endswith("/file"):
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"id": "i1", "size": 4}']
        start_response("200 OK", [("Content-Length", "4")])
        return Broken()

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v2/images/i1/file"}
    result = NotificationMiddleware(app, Notifier())(environ, lambda *args: None)
    with pytest.raises(OSError, match="store unreachable"):
        iter(result)
        list(result)
    result.close()  # type: ignore[attr-defined]
    assert closes == [1]
    assert notifications.events == [("image.send", "ERROR")]


def test_a_refused_lookup_means_no_prepare(notifications: CapturedNotifications) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"not yours"]

    call(NotificationMiddleware(app, Notifier()), "PUT", "/v2/images/i1/file", b"data")
    assert notifications.events == [("image.upload", "WARN")]


def test_an_unconfirmed_image_refused_before_its_data_is_a_warning_without_prepare(
    caplog: pytest.LogCaptureFixture, notifications: CapturedNotifications
) -> None:
    """The lookup failed; the application refuses without reading the data."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            raise RuntimeError("lookup broke")
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"not yours"]

    call(NotificationMiddleware(app, Notifier()), "PUT", "/v2/images/i1/file", b"data")
    assert notifications.events == [("image.upload", "WARN")]


def test_subrequest_asks_for_an_uncompressed_body(api: ImageAPI) -> None:
    counting = Counting(api)
    app = NotificationMiddleware(counting, Notifier())
    image_id = create(api)  # not through the filter: it has not seen the image
    counting.seen.clear()
    call(app, "DELETE", f"/v2/images/{image_id}", headers={"Accept-Encoding": "gzip"})
    lookup, delete = counting.seen
    assert "HTTP_ACCEPT_ENCODING" not in lookup and delete["HTTP_ACCEPT_ENCODING"] == "gzip"


def test_an_in_process_caller_that_never_closes_a_listed_body_still_gets_the_upload(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    """WebOb's Request.get_response hands back a 204 without iterating or closing it."""
    from webob import Request

    image_id = create(app)
    upload = Request.blank(
        f"/v2/images/{image_id}/file",
        method="PUT",
        body=b"x" * 1000,
        headers={"Content-Type": "application/octet-stream", **IDENTITY},
    )
    response = upload.get_response(app)
    assert response.status_int == 204
    assert notifications.events == [
        ("image.create", "INFO"),
        ("image.prepare", "INFO"),
        ("image.upload", "INFO"),
        ("image.activate", "INFO"),
    ]
    assert notifications[-1].payload["size"] == 1000


def test_a_listed_body_reaches_the_server_as_the_very_same_list(
    notifications: CapturedNotifications,
) -> None:
    body = [b'{"id": "i1", "name": "n", "status": "queued"}']

    def listed(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "application/json")])
        return body

    filtered = NotificationMiddleware(listed, Notifier())
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v2/images"}
    assert filtered(environ, lambda status, headers, exc_info=None: None) is body
    assert notifications.events == [("image.create", "INFO")]


def test_downloads_and_deletes_of_images_the_filter_has_seen_need_no_lookup(
    api: ImageAPI, notifications: CapturedNotifications
) -> None:
    counting = Counting(api)
    app = NotificationMiddleware(counting, Notifier())
    image_id = create(app)
    call(app, "PUT", f"/v2/images/{image_id}/file", b"d" * 3000, IDENTITY)
    call(
        app,
        "PATCH",
        f"/v2/images/{image_id}",
        [{"op": "replace", "path": "/name", "value": "n2"}],
        PATCH,
    )
    counting.seen.clear()
    assert call(app, "GET", f"/v2/images/{image_id}/file", headers=IDENTITY).code == 200
    assert (
        call(app, "GET", f"/v2/images/{image_id}/file", headers={"Range": "bytes=0-9"}).code == 206
    )
    assert call(app, "DELETE", f"/v2/images/{image_id}", headers=IDENTITY).code == 204
    assert [env["REQUEST_METHOD"] for env in counting.seen] == ["GET", "GET", "DELETE"]
    assert not any(env.get("instrument.subrequest") for env in counting.seen)
    sends = [n.payload for n in notifications if n.event_type == "image.send"]
    assert [(s["owner_id"], s["bytes_sent"]) for s in sends] == [
        ("tenant-9", 3000),
        ("tenant-9", 10),
    ]
    assert sends[0]["receiver_tenant_id"] == "tenant-9"
    (deleted,) = [n.payload for n in notifications if n.event_type == "image.delete"]
    assert deleted["name"] == "n2" and deleted["size"] == 3000 and deleted["status"] == "deleted"


def test_an_image_not_yet_active_or_not_seen_is_looked_up(
    api: ImageAPI, notifications: CapturedNotifications
) -> None:
    counting = Counting(api)
    app = NotificationMiddleware(counting, Notifier())
    queued = create(app)  # seen queued: its size was not final then
    call(api, "PUT", f"/v2/images/{queued}/file", b"q" * 10, IDENTITY)  # past the filter
    unseen = create(api)
    counting.seen.clear()
    call(app, "GET", f"/v2/images/{queued}/file", headers=IDENTITY)
    call(app, "DELETE", f"/v2/images/{unseen}", headers=IDENTITY)
    lookups = [env["PATH_INFO"] for env in counting.seen if env.get("instrument.subrequest")]
    assert lookups == [f"/v2/images/{queued}", f"/v2/images/{unseen}"]


def test_with_seen_images_0_every_download_and_delete_asks(
    api: ImageAPI, notifications: CapturedNotifications
) -> None:
    counting = Counting(api)
    app = NotificationMiddleware(counting, Notifier(), seen_images=0)
    image_id = create(app)
    call(app, "PUT", f"/v2/images/{image_id}/file", b"d" * 10, IDENTITY)
    counting.seen.clear()
    call(app, "GET", f"/v2/images/{image_id}/file", headers=IDENTITY)
    call(app, "DELETE", f"/v2/images/{image_id}", headers=IDENTITY)
    assert sum(1 for env in counting.seen if env.get("instrument.subrequest")) == 2
