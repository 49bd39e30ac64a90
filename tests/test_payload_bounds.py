"""Valid but odd input still gives valid, bounded notifications without secrets or paths.

Each test is one measurement of a hostile pass against the first release, put back
under the condition that broke it: a name nested 900 deep, a create response over the
kept-body limit, NaN and lone surrogates in a response, a 200,000-character image id,
an exception text holding a server path, store URLs with credentials in properties.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from instrument import Notification, Notifier
from instrument.decorators import Instrumentation
from instrument.events import MAX_NOTIFICATION_BYTES
from instrument.middleware import NotificationMiddleware
from instrument.strategies.log import LoggingStrategy
from instrument.testing import CapturedNotifications

from .wsgi import call


def strict(notification: Notification) -> Any:
    """The wire form, parsed as strictly as consumers do (orjson refuses NaN, surrogates)."""
    text = notification.to_json()
    assert len(text.encode("utf-8")) <= MAX_NOTIFICATION_BYTES
    return orjson.loads(text.encode("utf-8"))


def answering(body: bytes, status: str = "201 Created", **headers: str) -> Any:
    """An application that answers every request with *body*."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "GET":  # the kit's metadata lookup
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"id": "big-1", "name": "big", "status": "queued"}).encode()]
        start_response(status, [("Content-Type", "application/json"), *headers.items()])
        return [body]

    return app


def test_a_name_nested_900_deep_is_cut_marked_and_counted_never_silent(
    notifications: CapturedNotifications,
) -> None:
    name: Any = "deep"
    for _ in range(900):
        name = [name]
    body = json.dumps({"id": "n1", "name": name, "status": "queued"}).encode()
    call(NotificationMiddleware(answering(body), Notifier()), "POST", "/v2/images", {})
    assert notifications.events == [("image.create", "INFO")]
    payload = strict(notifications[0])["payload"]
    assert payload["id"] == "n1" and payload["truncated"] is True
    depth, value = 0, payload["name"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert depth < 40 and value == "<cut: nested too deeply>"


def test_a_create_response_over_the_kept_limit_still_names_the_image_through_location(
    notifications: CapturedNotifications,
) -> None:
    huge = json.dumps({"id": "big-1", "name": "x" * (2 * 1024 * 1024)}).encode()
    app = answering(huge, Location="http://api/v2/images/big-1")
    call(NotificationMiddleware(app, Notifier()), "POST", "/v2/images", {})
    assert notifications.events == [("image.create", "INFO")]
    assert notifications[0].payload["id"] == "big-1"
    assert notifications[0].payload["name"] == "big"


def test_a_payload_too_large_for_the_wire_is_shrunk_and_marked(
    notifications: CapturedNotifications,
) -> None:
    body = json.dumps({"id": "b1", "name": "y" * 900_000, "tags": ["t"] * 5000}).encode()
    call(NotificationMiddleware(answering(body), Notifier()), "POST", "/v2/images", {})
    payload = strict(notifications[0])["payload"]
    assert payload["id"] == "b1" and payload["truncated"] is True
    assert payload["name"].startswith("yyy") and payload["name"].endswith("…")


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1.5e400"])
def test_non_finite_numbers_in_a_response_become_valid_json(
    number: bytes, notifications: CapturedNotifications
) -> None:
    body = b'{"id": "f1", "status": "queued", "min_ram": ' + number + b"}"
    call(NotificationMiddleware(answering(body), Notifier()), "POST", "/v2/images", {})
    assert strict(notifications[0])["payload"]["min_ram"] in ("nan", "inf", "-inf")


def test_a_lone_surrogate_is_replaced_so_every_strategy_can_encode_it(
    tmp_path: Path, notifications: CapturedNotifications
) -> None:
    body = b'{"id": "s1", "status": "queued", "name": "\\ud800"}'
    notifier = Notifier(LoggingStrategy(log_file=str(tmp_path / "notifications.log")))
    call(NotificationMiddleware(answering(body), notifier), "POST", "/v2/images", {})
    notifier.close()
    assert strict(notifications[0])["payload"]["name"] == "\ufffd"
    (line,) = (tmp_path / "notifications.log").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["payload"]["name"] == "\ufffd"


def test_a_200000_character_image_id_gives_a_small_warning(
    notifications: CapturedNotifications,
) -> None:
    def missing(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such image"]

    bogus = "a" * 200_000
    call(NotificationMiddleware(missing, Notifier()), "DELETE", f"/v2/images/{bogus}")
    call(NotificationMiddleware(missing, Notifier()), "GET", f"/v2/images/{bogus}/file")
    assert notifications.events == [("image.delete", "WARN"), ("image.send", "WARN")]
    for notification in notifications:
        assert len(notification.to_json()) < 2048
    assert len(notifications[1].payload["image_id"]) == 255


def test_error_texts_carry_no_server_file_path(notifications: CapturedNotifications) -> None:
    def failing(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise OSError(36, "File name too long", "/srv/glance/images/" + "z" * 300)

    with pytest.raises(OSError):
        call(NotificationMiddleware(failing, Notifier()), "PUT", "/v2/images/i1/file", b"x")
    (text,) = [n.payload for n in notifications if n.priority == "ERROR"]
    assert "/srv/glance" not in text and "<path>" in text
    assert text.startswith("image.upload failed for image i1: ")


# Properties in which Glance's stores and import flows keep URLs.
STORE_PROPERTIES = {
    "os_glance_import_creds": "swift://admin:TOPSECRET@keystone:5000/v3/images/1",
    "store_url": "s3://AKIAKEY:SeCrEt/WithSlash@s3.example.org/bucket/1",
    "import_uri": "https://user:TOPSECRET@mirror.example.org/cirros.img",
    "nested": {"backup": ["rbd://client.glance:TOPSECRET@ceph/pool/1"]},
}


def _secrets_left(payload: Any) -> list[str]:
    text = json.dumps(payload)
    return [secret for secret in ("TOPSECRET", "SeCrEt", "AKIAKEY") if secret in text]


def test_url_credentials_in_any_property_of_a_response_are_masked(
    notifications: CapturedNotifications,
) -> None:
    body = json.dumps({"id": "c1", "status": "queued", **STORE_PROPERTIES}).encode()
    call(NotificationMiddleware(answering(body), Notifier()), "POST", "/v2/images", {})
    payload = notifications[0].payload
    assert _secrets_left(payload) == []
    assert payload["properties"]["import_uri"] == "https://***@mirror.example.org/cirros.img"


def test_url_credentials_in_a_decorated_handlers_result_are_masked(
    notifications: CapturedNotifications,
) -> None:
    on = Instrumentation(Notifier())

    @on.create
    def create() -> dict[str, Any]:
        return {"id": "c2", "status": "queued", **STORE_PROPERTIES}

    create()
    assert _secrets_left(notifications[0].payload) == []


def test_url_credentials_in_v1_image_headers_are_masked(
    notifications: CapturedNotifications,
) -> None:
    def v1(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("x-image-meta-id", "v1-1"),
                ("x-image-meta-status", "active"),
                ("x-image-meta-property-store_url", STORE_PROPERTIES["store_url"]),
            ],
        )
        return [b""]

    call(NotificationMiddleware(v1, Notifier()), "PUT", "/v1/images/v1-1")
    assert _secrets_left(notifications[0].payload) == []
