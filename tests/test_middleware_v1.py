"""The middleware on Glance's v1 routes: x-image-meta-* headers and {"image": ...} bodies."""

from __future__ import annotations

import pytest

from instrument import Notifier
from instrument.middleware import NotificationMiddleware
from instrument.testing import CapturedNotifications

from .v1_app import V1ImageAPI
from .wsgi import call

META = {
    "X-Image-Meta-Name": "cirros",
    "X-Image-Meta-Disk_format": "qcow2",
    "X-Image-Meta-Property-Distro": "cirros",
}
DATA = {**META, "Content-Type": "application/octet-stream"}


@pytest.fixture
def api() -> V1ImageAPI:
    return V1ImageAPI()


@pytest.fixture
def app(api: V1ImageAPI) -> NotificationMiddleware:
    return NotificationMiddleware(api, Notifier())


def test_post_without_data_emits_create_only(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    reply = call(app, "POST", "/v1/images", b"", META)
    assert reply.code == 201
    assert notifications.events == [("image.create", "INFO")]
    payload = notifications[0].payload
    assert payload["name"] == "cirros" and payload["status"] == "queued"
    assert payload["properties"] == {"distro": "cirros"} and payload["visibility"] == "private"
    assert "location" not in payload


def test_post_with_data_emits_create_prepare_upload_activate(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    call(app, "POST", "/v1/images", b"z" * 300, DATA)
    assert notifications.events == [
        ("image.create", "INFO"),
        ("image.prepare", "INFO"),
        ("image.upload", "INFO"),
        ("image.activate", "INFO"),
    ]
    assert all(n.payload["size"] == 300 for n in notifications)


def test_put_with_data_prepares_before_then_upload_activate_update(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = call(app, "POST", "/v1/images", b"", META).json()["image"]["id"]
    notifications.clear()
    call(app, "PUT", f"/v1/images/{image_id}", b"q" * 10, DATA)
    assert notifications.event_types == [
        "image.prepare",
        "image.upload",
        "image.activate",
        "image.update",
    ]
    # Looked up with HEAD before the data (queued), reported as saving like Glance does.
    assert notifications[0].payload["status"] == "saving"
    assert notifications[3].payload["status"] == "active"


def test_put_without_data_is_an_update(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = call(app, "POST", "/v1/images", b"", META).json()["image"]["id"]
    notifications.clear()
    call(app, "PUT", f"/v1/images/{image_id}", b"", {"X-Image-Meta-Name": "renamed"})
    assert notifications.events == [("image.update", "INFO")]
    assert notifications[0].payload["name"] == "renamed"


def test_put_with_data_that_fails_warns_upload(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = call(app, "POST", "/v1/images", b"data", DATA).json()["image"]["id"]
    notifications.clear()
    assert call(app, "PUT", f"/v1/images/{image_id}", b"again", DATA).code == 409
    assert notifications.events == [("image.upload", "WARN")]


def test_delete_emits_metadata_from_a_head_lookup(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = call(app, "POST", "/v1/images", b"", META).json()["image"]["id"]
    notifications.clear()
    call(app, "DELETE", f"/v1/images/{image_id}")
    assert notifications.events == [("image.delete", "INFO")]
    payload = notifications[0].payload
    assert payload["name"] == "cirros" and payload["deleted"] is True
    assert payload["properties"] == {"distro": "cirros"}
    assert payload["size"] == 0 and payload["is_public"] is False


def test_get_counts_the_download_with_owner_from_the_headers(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = call(app, "POST", "/v1/images", b"w" * 64, DATA).json()["image"]["id"]
    notifications.clear()
    reply = call(
        app, "GET", f"/v1/images/{image_id}", headers={"X-Tenant-Id": "t", "X-User-Id": "u"}
    )
    assert reply.body == b"w" * 64
    assert notifications.events == [("image.send", "INFO")]
    assert notifications[0].payload["owner_id"] == "tenant-1"
    assert notifications[0].payload["bytes_sent"] == 64


def test_head_and_detail_emit_nothing(
    app: NotificationMiddleware, notifications: CapturedNotifications
) -> None:
    image_id = call(app, "POST", "/v1/images", b"w", DATA).json()["image"]["id"]
    notifications.clear()
    call(app, "HEAD", f"/v1/images/{image_id}")
    call(app, "GET", "/v1/images/detail")
    assert list(notifications) == []
