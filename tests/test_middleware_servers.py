"""The middleware behind real WSGI servers: a full image lifecycle over HTTP."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from examples.image_api import ImageAPI
from instrument import Notifier
from instrument.middleware import NotificationMiddleware
from instrument.testing import CapturedNotifications

from .lifecycle import LIFECYCLE_EVENTS
from .servers import gunicorn_server, read_partially, waitress_server

pytestmark = pytest.mark.servers

SIZE = 48 * 1024 * 1024 + 17  # larger than any socket buffer, so an abort is visible
DATA = bytes(range(256)) * (SIZE // 256) + b"x" * (SIZE % 256)


def request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    connection.request(method, path, body=payload, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def lifecycle(port: int, settle: Callable[[int], object]) -> str:
    status, body = request(
        port,
        "POST",
        "/v2/images",
        {"name": "cirros", "disk_format": "raw", "container_format": "bare"},
        {"Content-Type": "application/json", "X-Project-Id": "p1"},
    )
    assert status == 201
    image_id: str = json.loads(body)["id"]
    assert (
        request(
            port,
            "PUT",
            f"/v2/images/{image_id}/file",
            DATA,
            {"Content-Type": "application/octet-stream"},
        )[0]
        == 204
    )
    status, body = request(port, "GET", f"/v2/images/{image_id}/file", headers={"X-User-Id": "u1"})
    assert status == 200 and body == DATA
    # A complete download is reported once the client acknowledged its last byte, which
    # may be after the next request's report: wait, so the order of the sends is fixed.
    settle(5)
    status, body = request(
        port, "GET", f"/v2/images/{image_id}/file", headers={"Range": "bytes=10-1033"}
    )
    assert status == 206 and body == DATA[10:1034]
    settle(6)
    read_partially(port, f"/v2/images/{image_id}/file", 64 * 1024)
    settle(7)  # the server reports the abort when it notices it: keep the order stable
    patch = [{"op": "replace", "path": "/name", "value": "cirros-2"}]
    assert (
        request(
            port,
            "PATCH",
            f"/v2/images/{image_id}",
            patch,
            {"Content-Type": "application/openstack-images-v2.1-json-patch"},
        )[0]
        == 200
    )
    assert request(port, "DELETE", f"/v2/images/{image_id}")[0] == 204
    return image_id


EXPECTED = LIFECYCLE_EVENTS


def check(events: list[tuple[str, str]], sends: list[dict[str, Any]]) -> None:
    assert events == EXPECTED
    complete, ranged, aborted = sends
    assert complete["bytes_sent"] == SIZE and complete["receiver_user_id"] == "u1"
    assert complete["owner_id"] == "p1" and complete["destination_ip"] == "127.0.0.1"
    assert ranged["bytes_sent"] == 1024
    assert 0 <= aborted["bytes_sent"] < SIZE


def test_lifecycle_through_waitress(tmp_path: Path, notifications: CapturedNotifications) -> None:
    app = NotificationMiddleware(ImageAPI(tmp_path), Notifier())
    with waitress_server(app) as port:
        lifecycle(port, lambda count: notifications.wait_for(count, timeout=10))
        assert notifications.wait_for(len(EXPECTED), timeout=10)
    check(notifications.events, notifications.payloads("image.send"))


def wait_for_lines(path: Path, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)


def test_lifecycle_through_gunicorn_with_sendfile(tmp_path: Path) -> None:
    log_file = tmp_path / "notifications.log"
    env = {
        "INSTRUMENT_STRATEGY": "logging",
        "INSTRUMENT_LOG_FILE": str(log_file),
        "IMAGE_API_DATA_DIR": str(tmp_path / "data"),
    }
    with gunicorn_server("examples.image_api.wsgi:application", env) as port:
        lifecycle(port, lambda count: wait_for_lines(log_file, count))
        wait_for_lines(log_file, len(EXPECTED))
    notes = [json.loads(line) for line in log_file.read_text().splitlines()]
    check(
        [(n["event_type"], n["priority"]) for n in notes],
        [n["payload"] for n in notes if n["event_type"] == "image.send"],
    )
