"""The decorators of instrument.decorators on every callable kind, outcome and payload source."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from webob import Request, Response
from webob import exc as http

from instrument import Notifier
from instrument.decorators import Instrumentation, instrument_class
from instrument.strategies.memory import MemoryStrategy
from instrument.testing import CapturedNotifications

ROOT = Path(__file__).resolve().parents[1]
IMAGE = {"id": "i1", "name": "cirros", "status": "queued", "owner": "t1"}
SHAPED = {**IMAGE, "properties": {}, "deleted": False, "deleted_at": None}


@pytest.fixture
def on() -> Instrumentation:
    return Instrumentation(Notifier())


@dataclasses.dataclass
class Record:
    id: str
    name: str
    status: str = "queued"
    owner: str = "t1"


class Model:
    def __init__(self, method: str) -> None:
        setattr(self, method, lambda: dict(IMAGE))


# --- payload sources ------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        dict(IMAGE),
        {"image": dict(IMAGE)},  # v1 body shape
        Record("i1", "cirros"),
        Model("to_dict"),
        Model("as_dict"),
        Response(
            json.dumps({**IMAGE, "self": "/v2/images/i1"}).encode(), content_type="application/json"
        ),
        Response(json.dumps({"image": IMAGE}).encode(), content_type="application/json"),
        Response(headerlist=[(f"x-image-meta-{k}", v) for k, v in IMAGE.items()]),
    ],
    ids=["dict", "v1-dict", "dataclass", "to_dict", "as_dict", "v2-json", "v1-json", "v1-head"],
)
def test_the_return_value_is_the_payload_in_glance_notification_shape(
    on: Instrumentation, notifications: CapturedNotifications, result: Any
) -> None:
    assert on.create(lambda: result)() is result
    assert notifications.events == [("image.create", "INFO")]
    assert notifications[0].payload == SHAPED


def test_payload_callable_receives_the_result(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    @on.update(payload=lambda result: result["image"])
    def handler() -> dict[str, Any]:
        return {"image": {"id": "i1", "hw_disk_bus": "scsi"}, "other": 1}

    handler()
    assert notifications[0].payload["properties"] == {"hw_disk_bus": "scsi"}


def test_image_argument_as_an_image_or_an_id_with_lookup(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    on.update(image="image")(lambda image: None)(Record("i1", "cirros"))
    on.update(image="image_id")(lambda image_id: None)(image_id="i1")
    on.update(image="image_id", lookup={"i1": IMAGE}.get)(lambda image_id: None)("i1")
    first, bare, looked_up = notifications.payloads("image.update")
    assert first == SHAPED and looked_up == SHAPED
    assert bare == {"id": "i1"}, "only the id is known: sent as the middleware does"


def test_lookup_by_method_name_on_the_instance(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    class Images:
        def find(self, image_id: str) -> dict[str, Any]:
            return {**IMAGE, "id": image_id}

        @on.update(image="image_id", lookup="find")
        def rename(self, image_id: str, name: str) -> None:
            pass

    Images().rename("i7", "new")
    Images.rename(Images(), "i8", name="new")
    assert [p["id"] for p in notifications.payloads("image.update")] == ["i7", "i8"]


def test_credentials_and_configured_keys_are_redacted(notifications: CapturedNotifications) -> None:
    on = Instrumentation(Notifier(redact=["secret"]))
    leaky = {
        "id": "i1",
        "direct_url": "rbd://key@pool",
        "locations": [{"url": "s3://k"}],
        "location": "swift://k",
        "secret": "x",
        "properties": {"secret": "y"},
    }
    on.create(lambda: leaky)()
    assert notifications[0].payload == {
        "id": "i1",
        "properties": {},
        "deleted": False,
        "deleted_at": None,
    }


def test_emits_sends_other_event_types_as_given(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    on.emits("image.member.create")(lambda: {"member": "t2", "location": "secret"})()
    assert notifications.events == [("image.member.create", "INFO")]
    assert notifications[0].payload == {"member": "t2"}


# --- outcomes -------------------------------------------------------------------------


def test_an_exception_is_error_and_reraised_unchanged_with_its_traceback(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    boom = ValueError("store exploded")

    @on.update(image="image_id")
    def handler(image_id: str) -> None:
        raise boom

    with pytest.raises(ValueError) as caught:
        handler("i1")
    assert caught.value is boom
    assert "raise boom" in "".join(traceback.format_tb(caught.value.__traceback__))
    assert notifications.events == [("image.update", "ERROR")]
    assert (
        notifications[0].payload == "image.update failed for image i1: ValueError: store exploded"
    )


@pytest.mark.parametrize(
    ("error", "priority", "text"),
    [
        (http.HTTPNotFound(), "WARN", "404 Not Found"),
        (http.HTTPBadGateway(), "ERROR", "502 Bad Gateway"),
    ],
)
def test_http_exceptions_returned_or_raised_are_warn_for_4xx_and_error_for_5xx(
    on: Instrumentation, notifications: CapturedNotifications, error: Any, priority: str, text: str
) -> None:
    def raising(image_id: str) -> None:
        raise error

    assert on.delete(image="image_id")(lambda image_id: error)("i1") is error
    with pytest.raises(type(error)):
        on.delete(image="image_id")(raising)("i1")
    assert notifications.events == [("image.delete", priority)] * 2
    assert (
        notifications.payloads("image.delete") == [f"image.delete failed for image i1: {text}"] * 2
    )


def test_a_failing_kit_never_reaches_the_caller(
    on: Instrumentation, notifications: CapturedNotifications, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(result: Any) -> Any:
        raise RuntimeError("payload bug")

    def lookup(image_id: str) -> Any:
        raise RuntimeError("db gone")

    with caplog.at_level(logging.WARNING, logger="instrument.decorators"):
        assert on.create(payload=broken)(lambda: 42)() == 42
        on.upload(image="image_id", lookup=lookup)(lambda image_id: None)("i1")
    assert "payload bug" in caplog.text and "lookup of image i1 failed" in caplog.text
    assert notifications.event_types == ["image.prepare", "image.upload"]
    assert notifications[0].payload["id"] == "i1"


# --- upload, delete --------------------------------------------------------------------


def test_upload_emits_prepare_before_the_handler_then_upload_and_activate(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    store = {"i1": dict(IMAGE)}
    seen_during: list[list[str]] = []

    @on.upload(image="image_id", lookup=store.get)
    def upload(image_id: str, data: bytes) -> None:
        seen_during.append(notifications.event_types)
        store[image_id].update(status="active", size=len(data))

    upload("i1", b"abc")
    assert seen_during == [["image.prepare"]]
    assert notifications.event_types == ["image.prepare", "image.upload", "image.activate"]
    assert notifications[0].payload["status"] == "saving"  # queued, reported as saving
    assert notifications[2].payload["size"] == 3


def test_upload_skips_prepare_for_unknown_or_active_images_and_activate_if_not_active(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    store = {"active": {"id": "active", "status": "active"}, "saving": {"id": "saving"}}
    upload = on.upload(image="image_id", lookup=store.get)(lambda image_id: None)
    upload("unknown")
    upload("active")
    store["saving"]["status"] = "queued"
    on.upload(image="image_id", lookup=store.get)(
        lambda image_id: store[image_id].update(status="saving")
    )("saving")
    assert notifications.event_types == [
        "image.upload",
        "image.upload",
        "image.activate",
        "image.prepare",
        "image.upload",
    ]


def test_delete_reads_the_image_before_the_handler_removes_it(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    store = {"i1": dict(IMAGE)}
    on.delete(image="image_id", lookup=store.get)(lambda image_id: store.pop(image_id) and None)(
        "i1"
    )
    payload = notifications[0].payload
    assert payload["name"] == "cirros" and payload["status"] == "deleted"
    assert payload["deleted"] is True and payload["deleted_at"]


# --- send ------------------------------------------------------------------------------


def request(method: str = "GET", **headers: str) -> Request:
    return Request.blank(
        "/v2/images/i1/file", method=method, remote_addr="192.0.2.1", headers=headers
    )


def test_send_counts_an_iterable_and_reports_the_receiver(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    @on.send(image="image_id", lookup={"i1": {**IMAGE, "size": 6}}.get)
    def download(req: Request, image_id: str) -> Iterator[bytes]:
        yield b"abc"
        yield b"def"

    body = download(request(**{"X-Tenant-Id": "t2", "X-User-Id": "bob"}), "i1")
    assert notifications.event_types == []
    assert b"".join(body) == b"abcdef"
    assert notifications.events == [("image.send", "INFO")]
    assert notifications[0].payload == {
        "image_id": "i1",
        "owner_id": "t1",
        "receiver_tenant_id": "t2",
        "receiver_user_id": "bob",
        "destination_ip": "192.0.2.1",
        "bytes_sent": 6,
    }


def test_send_of_an_abandoned_body_is_error(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    body = on.send(image="image_id", lookup={"i1": {"id": "i1", "size": 6}}.get)(
        lambda req, image_id: [b"abc", b"def"]
    )(request(), "i1")
    next(iter(body))
    body.close()  # type: ignore[attr-defined]
    assert notifications.events == [("image.send", "ERROR")]
    assert notifications[0].payload["bytes_sent"] == 3


def test_send_of_a_body_returned_whole_as_bytes_leaves_it_bytes_and_reports_it(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    lookup = {"i1": {**IMAGE, "size": 6}}.get
    whole = on.send(image="image_id", lookup=lookup)(lambda req, image_id: b"abcdef")
    assert whole(request(), "i1") == b"abcdef"
    assert notifications.events == [("image.send", "INFO")]
    assert notifications[0].payload["bytes_sent"] == 6
    short = on.send(image="image_id", lookup=lookup)(lambda req, image_id: bytearray(b"ab"))
    assert short(request(), "i1") == bytearray(b"ab")
    assert notifications.events[-1] == ("image.send", "ERROR")  # 2 of the 6 promised
    for not_a_body in ("text", {"id": "i1"}):
        same = on.send(image="image_id")(lambda req, image_id, r=not_a_body: r)
        assert same(request(), "i1") is not_a_body
    assert len(notifications.events) == 2


def test_send_returns_a_response_that_is_still_a_response_and_counts_its_body(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    response = Response(body=b"x" * 10, content_type="application/octet-stream")
    result = on.send(image="image_id")(lambda req, image_id: response)(request(), "i1")
    assert isinstance(result, Response) and result.status_code == 200
    assert result.__wrapped__ is response
    assert request().get_response(result).body == b"x" * 10
    assert notifications.events == [("image.send", "INFO")]
    assert notifications[0].payload["bytes_sent"] == 10


def test_send_failures_carry_the_send_dict_and_head_is_not_counted(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    @on.send(image="image_id")
    def download(req: Request, image_id: str) -> Any:
        raise http.HTTPNotFound()

    with pytest.raises(http.HTTPNotFound):
        download(request(), "nope")
    with pytest.raises(http.HTTPNotFound):
        download(request("HEAD"), "nope")
    assert notifications.events == [("image.send", "WARN")]
    assert notifications[0].payload["bytes_sent"] == 0
    assert notifications[0].payload["image_id"] == "nope"


# --- callable kinds ---------------------------------------------------------------------


def test_methods_classmethods_and_staticmethods_in_either_order(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    class Handlers:
        @on.update(image="image_id")
        def method(self, image_id: str) -> None: ...

        @on.update(image="image_id")
        @classmethod
        def outer_class(cls, image_id: str) -> None: ...

        @classmethod
        @on.update(image="image_id")
        def inner_class(cls, image_id: str) -> None: ...

        @on.update(image="image_id")
        @staticmethod
        def outer_static(image_id: str) -> None: ...

        @staticmethod
        @on.update(image="image_id")
        def inner_static(image_id: str) -> None: ...

    handlers = Handlers()
    for number, name in enumerate(
        ["method", "outer_class", "inner_class", "outer_static", "inner_static"]
    ):
        getattr(handlers, name)(f"h{number}")
    Handlers.outer_class("c")
    Handlers.outer_static("s")
    Handlers.method(handlers, "u")
    ids = [payload["id"] for payload in notifications.payloads("image.update")]
    assert ids == ["h0", "h1", "h2", "h3", "h4", "c", "s", "u"]


def test_async_handlers_are_awaited_and_stay_coroutine_functions(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    @on.create
    async def create() -> dict[str, Any]:
        await asyncio.sleep(0)
        return dict(IMAGE)

    @on.update(image="image_id")
    async def update(image_id: str) -> None:
        await asyncio.sleep(0)
        raise http.HTTPConflict()

    assert inspect.iscoroutinefunction(create) and inspect.iscoroutinefunction(update)
    assert asyncio.run(create()) == IMAGE
    with pytest.raises(http.HTTPConflict):
        asyncio.run(update("i1"))
    assert notifications.events == [("image.create", "INFO"), ("image.update", "WARN")]
    assert notifications[0].payload == SHAPED


def test_async_send_counts_the_iterable_it_returns(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    @on.send(image="image_id")
    async def download(req: Request, image_id: str) -> list[bytes]:
        return [b"abcd"]

    assert b"".join(asyncio.run(download(request(), "i1"))) == b"abcd"
    assert notifications.events == [("image.send", "INFO")]


def test_generator_handlers_emit_after_exhaustion_with_the_return_value(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    @on.create
    def create() -> Iterator[str]:
        yield "working"
        return dict(IMAGE)  # type: ignore[misc]

    @on.update(image="image_id")
    def update(image_id: str) -> Iterator[str]:
        yield "working"
        raise RuntimeError("half way")

    assert inspect.isgeneratorfunction(create)
    assert list(create()) == ["working"]
    with pytest.raises(RuntimeError):
        list(update("i1"))
    assert notifications.events == [("image.create", "INFO"), ("image.update", "ERROR")]
    assert notifications[0].payload == SHAPED


def test_async_generator_handlers(
    on: Instrumentation, notifications: CapturedNotifications
) -> None:
    @on.update(image="image_id")
    async def update(image_id: str) -> AsyncIterator[int]:
        yield 1

    async def consume() -> list[int]:
        return [item async for item in update("i1")]

    assert inspect.isasyncgenfunction(update)
    assert asyncio.run(consume()) == [1]
    assert notifications.events == [("image.update", "INFO")]


def test_metadata_and_signature_are_kept(on: Instrumentation) -> None:
    def handler(request: Any, image_id: str, *, force: bool = False) -> None:
        """Doc."""

    decorated = on.upload(image="image_id")(handler)
    assert decorated.__name__ == "handler" and decorated.__doc__ == "Doc."
    assert decorated.__wrapped__ is handler  # type: ignore[attr-defined]
    assert inspect.signature(decorated) == inspect.signature(handler)


def test_a_misspelt_image_argument_fails_at_decoration(on: Instrumentation) -> None:
    with pytest.raises(TypeError, match="has no argument 'imageid'"):
        on.update(image="imageid")(lambda image_id: None)


# --- enabling ----------------------------------------------------------------------------


def test_enabled_false_returns_the_handler_itself(notifications: CapturedNotifications) -> None:
    def handler() -> dict[str, Any]:
        return dict(IMAGE)

    assert Instrumentation(Notifier()).create(enabled=False)(handler) is handler
    assert Instrumentation(Notifier(), enabled=False).create(handler) is handler


def test_enabled_callable_switches_at_run_time(notifications: CapturedNotifications) -> None:
    switch = {"on": False}
    create = Instrumentation(Notifier(), enabled=lambda: switch["on"]).create(lambda: IMAGE)
    create()
    switch["on"] = True
    create()
    assert notifications.event_types == ["image.create"]


def test_disabled_event_types_cost_no_lookup(notifications: CapturedNotifications) -> None:
    looked_up: list[str] = []
    on = Instrumentation(Notifier(disabled_notifications=["image"]))
    on.delete(image="i", lookup=looked_up.append)(lambda i: None)("i1")
    on.upload(image="i", lookup=looked_up.append)(lambda i: None)("i1")
    assert looked_up == [] and list(notifications) == []


def test_with_prepare_disabled_a_failed_upload_is_still_an_error(
    notifications: CapturedNotifications,
) -> None:
    on = Instrumentation(Notifier(disabled_notifications=["image.prepare"]))

    @on.upload(image="image_id", lookup={"i1": {"id": "i1", "status": "queued"}}.get)
    def upload(image_id: str, data: bytes) -> None:
        raise http.HTTPBadRequest("short body")

    with pytest.raises(http.HTTPBadRequest):
        upload("i1", b"data")
    assert notifications.events == [("image.upload", "ERROR")]


# --- class decorator, example -------------------------------------------------------------


def test_instrument_class_applies_a_mapping_in_one_line(
    notifications: CapturedNotifications,
) -> None:
    @instrument_class(
        Notifier(), {"make": "create", "drop": "delete", "tag": "image.tag"}, image="image_id"
    )
    class Images:
        def make(self) -> dict[str, Any]:
            return dict(IMAGE)

        def drop(self, image_id: str) -> None: ...

        @staticmethod
        def tag(image_id: str) -> None: ...

    Images().make()
    Images().drop("i2")
    Images.tag("i3")
    assert notifications.event_types == ["image.create", "image.delete", "image.tag"]
    assert notifications[1].payload["id"] == "i2" and notifications[2].payload == {"id": "i3"}


def test_the_example_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "decorators.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for event in [
        "image.create",
        "image.prepare",
        "image.upload",
        "image.activate",
        "image.send",
        "image.delete",
    ]:
        assert event in result.stdout
    assert "ERROR" in result.stdout and "swift://" not in result.stdout


@pytest.mark.parametrize("shaped", [False, True])
def test_status_action_reports_only_a_change_of_status_also_with_a_payload_function(
    shaped: bool,
) -> None:
    """Deactivating twice is one image.update, as Glance sends it; ``payload=`` only
    shapes the notification, it does not make every call a change."""
    memory = MemoryStrategy()
    on = Instrumentation(Notifier(memory))
    images = {"i-1": {"id": "i-1", "status": "active"}}
    options: dict[str, Any] = {"image": "image_id", "lookup": images.get}
    if shaped:
        options["payload"] = lambda result: {**images["i-1"], "shaped": True}

    @on.status_action(**options)
    def deactivate(image_id: str) -> None:
        images[image_id] = {**images[image_id], "status": "deactivated"}

    deactivate("i-1")
    deactivate("i-1")
    assert [n.event_type for n in memory.notifications] == ["image.update"]
    assert memory.notifications[0].payload["status"] == "deactivated"
