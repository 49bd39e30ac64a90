"""Routes, meanings and the import follower for stage, import and members, in-process.

The follower is driven step by step with a fake clock and a fake application whose import
task takes as long as the test says, so bounds are checked without timing.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from instrument import Notifier
from instrument._follower import ImportFollower
from instrument._imports import ImportRequest, import_outcome, import_request
from instrument.lifecycle import KIND_EVENTS, failure_event, success_events
from instrument.middleware import NotificationMiddleware
from instrument.routes import RouteTable
from instrument.strategies.memory import MemoryStrategy

IMAGE = "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    ("method", "path", "kind", "member"),
    [
        ("PUT", f"/v2/images/{IMAGE}/stage", "stage", None),
        ("POST", f"/v2/images/{IMAGE}/import", "import", None),
        ("POST", f"/v2/images/{IMAGE}/members", "member_create", None),
        ("PUT", f"/v2/images/{IMAGE}/members/proj", "member_update", "proj"),
        ("DELETE", f"/image/v2.1/images/{IMAGE}/members/proj/", "member_delete", "proj"),
    ],
)
def test_new_routes_match_with_image_and_member(
    method: str, path: str, kind: str, member: str | None
) -> None:
    match = RouteTable().match(method, path)
    assert match is not None and (match.kind, match.image_id, match.member_id) == (
        kind,
        IMAGE,
        member,
    )


def test_stage_and_import_emit_nothing_when_answered_and_fail_as_upload() -> None:
    assert success_events("stage", False, {}) == success_events("import", False, {}) == []
    assert failure_event("stage") == failure_event("import") == "image.upload"
    assert KIND_EVENTS["member_delete"] == ("image.member.delete",)


class FakeGlance:
    """An image API whose import task ends when the test says so."""

    def __init__(self, task_status: str = "processing") -> None:
        self.task_status = task_status
        self.calls: list[str] = []
        self.tasks_status = "200 OK"

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        self.calls.append(f"{method} {path}")
        if method == "POST" and path.endswith("/import"):
            start_response("202 Accepted", [])
            return [b""]
        if path.endswith("/tasks"):
            task = {
                "id": "t1",
                "type": "api_image_import",
                "status": self.task_status,
                "created_at": "2999-01-01T00:00:00.000000",
                "image_id": IMAGE,
                "message": "HTTP Error 404",
            }
            start_response(self.tasks_status, [("Content-Type", "application/json")])
            return [json.dumps({"tasks": [task]}).encode()]
        image = {"id": IMAGE, "status": "active", "stores": "fs", "size": 3, "checksum": "c"}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(image).encode()]


def _import(app: Any, body: dict[str, Any]) -> tuple[str, Any]:
    data = json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"/v2/images/{IMAGE}/import",
        "CONTENT_LENGTH": str(len(data)),
        "wsgi.input": io.BytesIO(data),
    }
    statuses: list[str] = []
    body_out = b"".join(app(environ, lambda s, h, e=None: statuses.append(s)))
    return statuses[0], body_out


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _follower(app: FakeGlance, notifier: Notifier, clock: Clock, **kw: Any) -> ImportFollower:
    follower = ImportFollower(app, notifier, clock=clock, **kw)
    follower._ensure_thread = lambda: None  # type: ignore[method-assign]  # stepped by hand
    return follower


def test_import_is_answered_at_once_and_followed_to_its_end() -> None:
    glance, clock = FakeGlance(), Clock()
    memory = MemoryStrategy()
    notifier = Notifier(memory)
    middleware = NotificationMiddleware(glance, notifier)
    middleware.imports = _follower(glance, notifier, clock)
    status, _ = _import(middleware, {"method": {"name": "glance-direct"}})
    assert status == "202 Accepted" and glance.calls == [f"POST /v2/images/{IMAGE}/import"]
    clock.now = 1.0
    middleware.imports.step()
    assert memory.notifications == []
    glance.task_status = "success"
    clock.now = 60.0
    middleware.imports.step()
    sent = [(n.event_type, n.payload.get("status")) for n in memory.notifications]
    assert sent == [
        ("image.prepare", "importing"),
        ("image.upload", "active"),
        ("image.activate", "active"),
    ]
    assert middleware.imports.stats()["ended"] == 1


def test_a_delete_after_an_import_reports_the_image_the_import_made() -> None:
    glance, clock = FakeGlance(task_status="success"), Clock()
    memory = MemoryStrategy()
    notifier = Notifier(memory)
    middleware = NotificationMiddleware(glance, notifier)
    middleware.imports = _follower(glance, notifier, clock)
    # Seen before the import, as a create's response shows it: queued, no data.
    middleware.seen.remember({"id": IMAGE, "status": "queued", "size": None, "checksum": None})
    _import(middleware, {"method": {"name": "web-download"}})
    clock.now = 60.0
    middleware.imports.step()
    environ = {"REQUEST_METHOD": "DELETE", "PATH_INFO": f"/v2/images/{IMAGE}"}
    b"".join(middleware(environ, lambda s, h, e=None: None))
    (deleted,) = [n.payload for n in memory.notifications if n.event_type == "image.delete"]
    assert (deleted["size"], deleted["checksum"]) == (3, "c")


def test_the_follower_keeps_to_its_rate_and_gives_up_after_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    glance, clock = FakeGlance(), Clock()
    memory = MemoryStrategy()
    follower = _follower(glance, Notifier(memory), clock, lookups_per_second=1.0, timeout=100.0)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/"}
    for _ in range(5):
        follower.follow(environ, f"/v2/images/{IMAGE}", ImportRequest("web-download"))
    for second in range(1, 100):
        clock.now = float(second)
        follower.step()
        assert follower.stats()["lookups"] <= second  # one lookup per second, for all five
    clock.now = 101.0
    with caplog.at_level(logging.WARNING, logger="instrument.imports"):
        follower.step()
    assert follower.stats()["gave_up"] == 5 and follower.stats()["following"] == 0
    assert "not following the import" in caplog.text
    assert memory.notifications == []


def test_more_imports_than_allowed_are_counted_not_followed() -> None:
    follower = _follower(FakeGlance(), Notifier(MemoryStrategy()), Clock(), max_followed=2)
    for _ in range(3):
        follower.follow({}, f"/v2/images/{IMAGE}", ImportRequest())
    assert (follower.stats()["following"], follower.stats()["gave_up"]) == (2, 1)


def test_a_refused_task_lookup_gives_up_at_once() -> None:
    glance, clock = FakeGlance(), Clock()
    glance.tasks_status = "404 Not Found"
    follower = _follower(glance, Notifier(MemoryStrategy()), clock)
    follower.follow({}, f"/v2/images/{IMAGE}", ImportRequest())
    clock.now = 2.0
    follower.step()
    assert follower.stats()["gave_up"] == 1


def test_failed_import_is_one_error_upload_naming_method_and_message() -> None:
    task = {"id": "t", "status": "failure", "image_id": IMAGE, "message": "HTTP Error 404"}
    ((priority, event, payload),) = import_outcome(ImportRequest("web-download"), task, None)
    assert (priority, event) == ("ERROR", "image.upload")
    assert "web-download" in payload and "HTTP Error 404" in payload and IMAGE in payload


def test_copy_image_reports_each_new_store_without_activate() -> None:
    request = import_request({"method": {"name": "copy-image"}, "stores": ["b", "c"]})
    image = {"id": IMAGE, "status": "active", "stores": "a,b,c", "properties": {}}
    events = import_outcome(request, {"id": "t", "status": "success"}, image)
    assert [(e, p.get("backend")) for _, e, p in events] == [
        ("image.prepare", "b"),
        ("image.upload", None),
        ("image.prepare", "c"),
        ("image.upload", None),
    ]


def test_a_forked_child_follows_none_of_the_parents_imports() -> None:
    """The parent reports its imports; a child following them too would report twice."""
    follower = _follower(FakeGlance(), Notifier(MemoryStrategy()), Clock())
    follower.follow({}, f"/v2/images/{IMAGE}", ImportRequest())
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if it follows nothing
        os._exit(0 if follower.stats()["following"] == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert follower.stats()["following"] == 1


@pytest.mark.parametrize("rate", [0, -1.0, float("nan")])
def test_a_follower_without_a_positive_lookup_rate_is_refused_at_once(rate: float) -> None:
    with pytest.raises(ValueError, match="lookups_per_second must be above 0"):
        ImportFollower(lambda environ, start_response: [], Notifier(), lookups_per_second=rate)
