"""Routes, meanings and the import follower for stage, import and members, in-process.

The follower is driven step by step with a fake clock and a fake application whose import
task takes as long as the test says, so bounds are checked without timing.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
import threading
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
    """An image API whose import task ends when the test says so.

    *tasks* are what ``GET .../tasks`` shows (one import task by default) and *image*
    what ``GET /v2/images/{id}`` shows; *failing* answers a path ending so with the
    given statuses, once each, before answering it normally. A DELETE removes the
    image: its tasks and itself are then 404.
    """

    def __init__(self, task_status: str = "processing") -> None:
        self.task_status = task_status
        self.calls: list[str] = []
        self.tasks_status = "200 OK"
        self.tasks: list[dict[str, Any]] | None = None
        self.image: dict[str, Any] | None = {
            "id": IMAGE,
            "status": "active",
            "stores": "fs",
            "size": 3,
            "checksum": "c",
        }
        self.failing: dict[str, list[str]] = {}

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        self.calls.append(f"{method} {path}")
        for ending, statuses in self.failing.items():
            if path.endswith(ending) and statuses:
                start_response(statuses.pop(0), [("Content-Type", "text/plain")])
                return [b"failed"]
        if method == "POST" and path.endswith("/import"):
            start_response("202 Accepted", [])
            return [b""]
        if method == "DELETE":
            self.image = None
            start_response("204 No Content", [])
            return []
        if self.image is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"gone"]
        if path.endswith("/tasks"):
            start_response(self.tasks_status, [("Content-Type", "application/json")])
            return [json.dumps({"tasks": self.tasks_shown()}).encode()]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(self.image).encode()]

    def tasks_shown(self) -> list[dict[str, Any]]:
        if self.tasks is not None:
            return self.tasks
        return [task("t1", self.task_status, message="HTTP Error 404")]


def task(
    task_id: str, status: str, created: str = "2999-01-01T00:00:00", **more: Any
) -> dict[str, Any]:
    """An import task as Glance's ``GET /v2/images/{id}/tasks`` shows it."""
    return {
        "id": task_id,
        "type": "api_image_import",
        "status": status,
        "created_at": f"{created}.000000",
        "image_id": IMAGE,
        **more,
    }


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


def _filtered(glance: FakeGlance) -> tuple[NotificationMiddleware, MemoryStrategy, Clock]:
    """The filter over *glance*, its follower stepped by hand with a fake clock."""
    clock, memory = Clock(), MemoryStrategy()
    notifier = Notifier(memory)
    middleware = NotificationMiddleware(glance, notifier)
    middleware.imports = _follower(glance, notifier, clock)
    return middleware, memory, clock


def _events(memory: MemoryStrategy) -> list[tuple[str, str, Any]]:
    """(priority, event, status or backend) of what was sent."""
    out = []
    for n in memory.notifications:
        detail = (
            n.payload.get("backend", n.payload.get("status"))
            if isinstance(n.payload, dict)
            else None
        )
        out.append((n.priority, n.event_type, detail))
    return out


@pytest.mark.parametrize("must_succeed", [True, False])
def test_an_import_to_several_stores_activates_the_image_as_glance_does(
    must_succeed: bool,
) -> None:
    """Glance keeps the image importing until the last store when every store must
    succeed (its default), and activates it with the first one otherwise."""
    body = {"method": {"name": "glance-direct"}, "stores": ["a", "b"]}
    if not must_succeed:
        body["all_stores_must_succeed"] = False
    image = {"id": IMAGE, "status": "active", "stores": "a,b", "size": 3, "checksum": "c"}
    done = task("t", "success", input={"backend": ["a", "b"]})
    events = import_outcome(import_request(body), done, image)
    sent = [(e, p.get("backend"), p.get("status")) for _, e, p in events]
    if must_succeed:
        assert sent == [
            ("image.prepare", "a", "importing"),
            ("image.upload", None, "importing"),
            ("image.prepare", "b", "importing"),
            ("image.upload", None, "active"),
            ("image.activate", None, "active"),
        ]
    else:
        assert sent == [
            ("image.prepare", "a", "importing"),
            ("image.upload", None, "active"),
            ("image.activate", None, "active"),
            ("image.prepare", "b", "active"),
            ("image.upload", None, "active"),
        ]
    first_prepare, second_prepare = (p for _, e, p in events if e == "image.prepare")
    assert first_prepare["checksum"] is None and second_prepare["checksum"] == "c"
    assert first_prepare["os_glance_importing_to_stores"] == ["a", "b"]
    assert second_prepare["os_glance_importing_to_stores"] == ["b"]


def test_the_stores_an_import_targets_are_the_ones_its_task_was_given() -> None:
    """A copy-image to all stores skips those the image was in already (Glance gives its
    task only the others), and a store that failed in an earlier import is not this
    import's failure."""
    request = import_request({"method": {"name": "copy-image"}, "all_stores": True})
    image = {
        "id": IMAGE,
        "status": "active",
        "stores": "a,b,c",
        "os_glance_failed_import": "d",  # from an earlier import
        "properties": {},
    }
    done = task("t", "success", input={"backend": ["c"]})
    events = import_outcome(request, done, image)
    assert [(pr, e, p.get("backend")) for pr, e, p in events] == [
        ("INFO", "image.prepare", "c"),
        ("INFO", "image.upload", None),
    ]
    listed = import_request({"method": {"name": "copy-image"}, "stores": ["c"]})
    assert [e for _, e, _ in import_outcome(listed, task("t", "success"), image)] == [
        "image.prepare",
        "image.upload",
    ]


def test_a_store_that_failed_when_it_need_not_succeed_is_one_error_saying_so() -> None:
    body = {
        "method": {"name": "copy-image"},
        "stores": ["b", "c"],
        "all_stores_must_succeed": False,
    }
    image = {"id": IMAGE, "status": "active", "stores": "a,b", "os_glance_failed_import": "c"}
    events = import_outcome(import_request(body), task("t", "success"), image)
    assert [(pr, e) for pr, e, _ in events][-1] == ("ERROR", "image.upload")
    problem = events[-1][2]
    assert "to c:" in problem and "the import task failed" not in problem


def test_a_single_store_import_names_no_backend_as_glance() -> None:
    image = {"id": IMAGE, "status": "active", "size": 3, "checksum": "c"}
    done = task("t", "success", input={"backend": [None]})
    events = import_outcome(import_request({"method": {"name": "glance-direct"}}), done, image)
    assert [e for _, e, _ in events] == ["image.prepare", "image.upload", "image.activate"]
    assert all("backend" not in p for _, _, p in events)


@pytest.mark.parametrize("failing", ["/tasks", IMAGE])
def test_a_lookup_the_application_fails_once_is_asked_again(failing: str) -> None:
    """A 5xx of the tasks lookup, or of the image lookup after the import ended, must
    not lose the import's events (a 401/403/404 still ends the following at once)."""
    glance = FakeGlance(task_status="success")
    glance.failing[failing] = ["503 Service Unavailable"]
    middleware, memory, clock = _filtered(glance)
    _import(middleware, {"method": {"name": "glance-direct"}})
    for second in range(2, 60, 2):
        clock.now = float(second)
        middleware.imports.step()
    assert [e for _, e, _ in _events(memory)] == ["image.prepare", "image.upload", "image.activate"]
    assert middleware.imports.stats()["gave_up"] == 0


def test_a_delete_of_an_image_being_followed_reports_its_import_first() -> None:
    """Once the image is gone its tasks cannot be read: the delete asks first."""
    glance = FakeGlance(task_status="success")
    middleware, memory, _ = _filtered(glance)
    _import(middleware, {"method": {"name": "glance-direct"}})
    environ = {"REQUEST_METHOD": "DELETE", "PATH_INFO": f"/v2/images/{IMAGE}"}
    b"".join(middleware(environ, lambda s, h, e=None: None))
    assert [e for _, e, _ in _events(memory)] == [
        "image.prepare",
        "image.upload",
        "image.activate",
        "image.delete",
    ]
    assert middleware.imports.stats()["ended"] == 1


def test_an_import_is_matched_to_its_task_from_when_it_was_asked() -> None:
    """Without a request id: the task a slow import request created before it answered,
    and for back-to-back imports each its own task, the oldest not taken."""
    glance = FakeGlance()
    middleware, memory, clock = _filtered(glance)
    request = dataclasses.replace(
        import_request({"method": {"name": "copy-image"}, "stores": ["b"]}), asked_at=100.0
    )
    later = dataclasses.replace(
        import_request({"method": {"name": "copy-image"}, "stores": ["c"]}), asked_at=104.0
    )
    follower = middleware.imports
    follower.follow({}, f"/v2/images/{IMAGE}", request)
    follower.follow({}, f"/v2/images/{IMAGE}", later)
    glance.image = {"id": IMAGE, "status": "active", "stores": "a,b", "size": 3}
    glance.tasks = [  # 1970-01-01 00:01:42 and :44: after each request arrived
        task("t-b", "success", created="1970-01-01T00:01:42"),
        task("t-c", "failure", created="1970-01-01T00:01:44", message="store c is full"),
    ]
    for second in range(2, 30, 2):
        clock.now = float(second)
        follower.step()
    assert _events(memory) == [
        ("INFO", "image.prepare", "b"),
        ("INFO", "image.upload", "active"),
        ("ERROR", "image.upload", None),
    ]
    assert "store c is full" in memory.notifications[-1].payload


def test_imports_still_followed_when_the_process_exits_are_counted_and_logged(
    tmp_path: Any,
) -> None:
    script = f"""
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
sys.path.insert(0, {os.getcwd()!r})
from instrument import Notifier
from instrument._follower import ImportFollower
from instrument._imports import ImportRequest
follower = ImportFollower(lambda e, s: [], Notifier())
follower._ensure_thread = lambda: None
follower.follow({{}}, "/v2/images/{IMAGE}", ImportRequest("glance-direct"))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"not following the import of image {IMAGE} (the process is exiting)" in done.stdout


def test_a_member_lookup_that_raises_still_names_the_member_removed() -> None:
    def failing(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            raise RuntimeError("the database is away")
        start_response("204 No Content", [])
        return []

    memory = MemoryStrategy()
    middleware = NotificationMiddleware(failing, Notifier(memory))
    environ = {"REQUEST_METHOD": "DELETE", "PATH_INFO": f"/v2/images/{IMAGE}/members/proj2"}
    b"".join(middleware(environ, lambda s, h, e=None: None))
    (removed,) = memory.notifications
    assert removed.event_type == "image.member.delete"
    assert (removed.payload["image_id"], removed.payload["member_id"]) == (IMAGE, "proj2")


@pytest.mark.parametrize("ending", ["deadline", "exit"])
def test_an_import_given_up_while_a_delete_asks_about_it_is_counted_once(ending: str) -> None:
    """A DELETE's settle is mid-lookup when the thread finds the import past its deadline
    (or the process exits): one import, counted once, and no events said not to be sent."""
    in_lookup, go_on = threading.Event(), threading.Event()

    def glance(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"].endswith("/tasks"):
            in_lookup.set()
            go_on.wait(10)
            body: Any = {"tasks": [task("t1", "success")]}
        else:
            body = {"id": IMAGE, "status": "active", "size": 3}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    clock, memory = Clock(), MemoryStrategy()
    follower = _follower(glance, Notifier(memory), clock, timeout=60.0)  # type: ignore[arg-type]
    follower.follow({}, f"/v2/images/{IMAGE}", ImportRequest("glance-direct"))
    settling = threading.Thread(target=follower.settle, args=(IMAGE,))
    settling.start()
    assert in_lookup.wait(10)
    if ending == "deadline":
        clock.now = 61.0
        follower.step()
    else:
        follower.give_up_all("the process is exiting")
    go_on.set()
    settling.join(10)
    stats = follower.stats()
    assert (stats["followed"], stats["ended"] + stats["gave_up"], stats["following"]) == (1, 1, 0)
    assert memory.notifications == []  # given up: said so, and so not sent
