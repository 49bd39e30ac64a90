"""The member decorators: image.member.create|update|delete in Glance's payload shape.

The example image API has no member routes, so the parity with the filter is shown on a
small WebOb members API of this module: the same requests against
``NotificationMiddleware(members_api)`` and the decorated handlers, same notifications.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from webob import Request, Response
from webob import exc as http

from instrument import Notifier
from instrument.decorators import Instrumentation, instrument_class
from instrument.middleware import NotificationMiddleware
from instrument.strategies.memory import MemoryStrategy
from instrument.testing import CapturedNotifications, capture

from .test_decorators_parity import comparable
from .wsgi import call

IMAGE = "11111111-0000-4000-8000-000000000001"
STORED = {
    "image_id": IMAGE,
    "member_id": "tenant-2",
    "status": "pending",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
    "schema": "/v2/schemas/member",
}
GLANCE_SHAPE = {**{k: v for k, v in STORED.items() if k != "schema"}, "deleted": False}


@pytest.fixture
def on() -> Instrumentation:
    return Instrumentation(Notifier())


def test_create_and_update_send_the_returned_member_in_glance_shape(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    on.member_create(lambda: dict(STORED))()
    on.member_update(lambda: Response(json=STORED))()
    create, update = notifications
    assert (create.event_type, update.event_type) == ("image.member.create", "image.member.update")
    assert create.payload == update.payload == {**GLANCE_SHAPE, "deleted_at": None}


def test_delete_reads_the_member_before_the_handler_removes_it(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    members = {(IMAGE, "tenant-2"): dict(STORED)}

    @on.member_delete(image="image_id", member="member_id", lookup=lambda i, m: members.get((i, m)))
    def remove(image_id: str, member_id: str) -> None:
        del members[(image_id, member_id)]

    remove(IMAGE, "tenant-2")
    (deleted,) = notifications.payloads("image.member.delete")
    assert deleted["deleted"] is True and deleted["deleted_at"]
    assert {k: deleted[k] for k in ("image_id", "member_id", "status")} == {
        "image_id": IMAGE,
        "member_id": "tenant-2",
        "status": "pending",
    }


def test_without_a_member_in_the_result_the_lookup_then_the_ids(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    handler = on.member_update(image="image_id", member="member_id")(lambda image_id, member_id: 0)
    handler(IMAGE, "tenant-2")
    on.member_delete(image="image_id", member="member_id")(lambda image_id, member_id: 0)(IMAGE, 7)
    update, delete = notifications.payloads("image.member.update") + notifications.payloads(
        "image.member.delete"
    )
    assert update == {"image_id": IMAGE, "member_id": "tenant-2"}
    assert (delete["image_id"], delete["member_id"], delete["deleted"]) == (IMAGE, "7", True)


def test_failures_are_warn_or_error_naming_the_image(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    @on.member_create(image="image_id")
    def add(image_id: str) -> Response:
        raise http.HTTPConflict()

    @on.member_update(image="image_id")
    def update(image_id: str) -> None:
        raise RuntimeError("database gone")

    with pytest.raises(http.HTTPConflict):
        add(IMAGE)
    with pytest.raises(RuntimeError):
        update(IMAGE)
    assert notifications.events == [
        ("image.member.create", "WARN"),
        ("image.member.update", "ERROR"),
    ]
    assert all(IMAGE in n.payload for n in notifications)


def test_instrument_class_gives_member_only_to_methods_that_have_it(
    notifications: CapturedNotifications,
) -> None:
    @instrument_class(
        Notifier(),
        {"add": "member_create", "remove": "member_delete"},
        image="image_id",
        member="member_id",
        lookup="find",
    )
    class Members:
        def find(self, image_id: str, member_id: str) -> dict[str, Any]:
            return {**STORED, "image_id": image_id, "member_id": member_id}

        def add(self, image_id: str, body: dict[str, Any]) -> dict[str, Any]:
            return {**STORED, "member_id": body["member"]}

        def remove(self, image_id: str, member_id: str) -> None:
            return None

    Members().add(IMAGE, {"member": "tenant-3"})
    Members().remove(IMAGE, "tenant-2")
    create, delete = notifications.payloads("image.member.create") + notifications.payloads(
        "image.member.delete"
    )
    assert create["member_id"] == "tenant-3" and delete["member_id"] == "tenant-2"
    assert delete["status"] == "pending" and delete["deleted"] is True


# --- parity with the filter ---------------------------------------------------------------

_PATH = re.compile(r"^/v2/images/(?P<image>[^/]+)/members(?:/(?P<member>[^/]+))?$")
Handler = Callable[..., Response]


class MembersAPI:
    """Image members as Glance's v2 API answers them (JSON in, JSON out)."""

    def __init__(self) -> None:
        self.members: dict[tuple[str, str], dict[str, Any]] = {}

    def find(self, image_id: str, member_id: str) -> dict[str, Any] | None:
        return self.members.get((image_id, member_id))

    def add(self, request: Request, image_id: str) -> Response:
        member_id = request.json["member"]
        if (image_id, member_id) in self.members:
            return http.HTTPConflict()
        self.members[(image_id, member_id)] = {**STORED, "member_id": member_id}
        return Response(json=self.members[(image_id, member_id)])

    def update(self, request: Request, image_id: str, member_id: str) -> Response:
        member = self.find(image_id, member_id)
        if member is None:
            return http.HTTPNotFound()
        member["status"] = request.json["status"]
        return Response(json=member)

    def remove(self, request: Request, image_id: str, member_id: str) -> Response:
        if self.members.pop((image_id, member_id), None) is None:
            return http.HTTPNotFound()
        return Response(status=204)

    def show(self, request: Request, image_id: str, member_id: str) -> Response:
        member = self.find(image_id, member_id)
        return http.HTTPNotFound() if member is None else Response(json=member)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        found = _PATH.match(request.path_info)
        if found is None:
            return http.HTTPNotFound()(environ, start_response)
        image, member = found["image"], found["member"]
        handlers: dict[str, Handler] = {"POST": self.add} if member is None else {
            "PUT": self.update, "DELETE": self.remove, "GET": self.show
        }  # fmt: skip
        handler = handlers.get(request.method)
        if handler is None:
            return http.HTTPMethodNotAllowed()(environ, start_response)
        args = (image,) if member is None else (image, member)
        return handler(request, *args)(environ, start_response)


def decorated_members_api() -> MembersAPI:
    steps = {"add": "member_create", "update": "member_update", "remove": "member_delete"}
    options = {"image": "image_id", "member": "member_id", "lookup": "find"}
    decorated = type("DecoratedMembersAPI", (MembersAPI,), {})  # instrument_class edits it
    return instrument_class(Notifier(), steps, **options)(decorated)()


def run_members(app: Any) -> list[int]:
    base = f"/v2/images/{IMAGE}/members"
    return [
        call(app, "POST", base, {"member": "tenant-2"}).code,
        call(app, "POST", base, {"member": "tenant-2"}).code,  # 409
        call(app, "PUT", f"{base}/tenant-2", {"status": "accepted"}).code,
        call(app, "PUT", f"{base}/tenant-9", {"status": "accepted"}).code,  # 404
        call(app, "PUT", f"{base}/tenant-2", {"status": "rejected"}).code,
        call(app, "DELETE", f"{base}/tenant-2").code,
        call(app, "DELETE", f"{base}/tenant-2").code,  # 404
    ]


def test_decorated_members_emit_what_the_filter_emits() -> None:
    results = []
    for app in (
        NotificationMiddleware(MembersAPI(), Notifier(MemoryStrategy())),
        decorated_members_api(),
    ):
        with capture() as captured:
            codes = run_members(app)
        results.append((codes, [comparable(n) for n in captured]))
    (filter_codes, expected), (codes, actual) = results
    assert codes == filter_codes == [200, 409, 200, 404, 200, 204, 404]
    assert actual == expected
    assert [event[:2] for event in actual] == [
        ("image.member.create", "INFO"),
        ("image.member.create", "WARN"),
        ("image.member.update", "INFO"),
        ("image.member.update", "WARN"),
        ("image.member.update", "INFO"),
        ("image.member.delete", "INFO"),
        ("image.member.delete", "WARN"),
    ]
    assert json.dumps(actual[5][2]["status"]) == '"rejected"'  # as it was before the delete
