"""Deploying the middleware: paste pipelines, options, custom routes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from paste.deploy import loadapp

from instrument import ConfigError, Notifier
from instrument.middleware import NotificationMiddleware, filter_factory
from instrument.routes import RouteTable, parse_routes
from instrument.testing import CapturedNotifications

from .wsgi import call


def write_ini(tmp_path: Path, filter_lines: str) -> str:
    path = tmp_path / "api-paste.ini"
    path.write_text(
        textwrap.dedent(
            """
            [pipeline:main]
            pipeline = notifications imageapi

            [filter:notifications]
            {filter_lines}

            [app:imageapi]
            paste.app_factory = examples.image_api.app:app_factory
            data_dir = {data_dir}
            """
        ).format(filter_lines=filter_lines, data_dir=tmp_path / "data")
    )
    return f"config:{path}"


@pytest.mark.parametrize(
    "declaration",
    [
        "use = egg:instrument#notifications",
        "paste.filter_factory = instrument.middleware:filter_factory",
    ],
)
def test_paste_pipeline_with_egg_or_factory_path(
    tmp_path: Path, declaration: str, notifications: CapturedNotifications
) -> None:
    app = loadapp(
        write_ini(tmp_path, f"{declaration}\nnotifier_strategy = memory\npublisher_id = api-3")
    )
    assert isinstance(app, NotificationMiddleware)
    reply = call(app, "POST", "/v2/images", {"name": "x"})
    assert reply.code == 201
    assert notifications.events == [("image.create", "INFO")]
    assert notifications[0].publisher_id == "api-3"
    assert app.notifier.stats()["memory"]["sent"] == 1


def test_bad_option_stops_the_pipeline_from_loading(tmp_path: Path) -> None:
    ini = write_ini(
        tmp_path, "use = egg:instrument#notifications\nnotifier_strategy = carrier-pigeon"
    )
    with pytest.raises(ConfigError, match=r"'carrier-pigeon' for option 'strategy'.*logging"):
        loadapp(ini)


def test_bad_image_lookup_value_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"'image_lookup'.*boolean"):
        filter_factory({}, image_lookup="sometimes")


def test_malformed_route_names_the_option_and_syntax() -> None:
    with pytest.raises(ConfigError) as caught:
        filter_factory({}, routes="FETCH /v2/things upload")
    assert "'routes'" in str(caught.value) and "METHOD /path/{id}" in str(caught.value)


def test_custom_routes_add_and_override(notifications: CapturedNotifications) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"id": "a1", "status": "active"}).encode()]
        start_response("204 No Content", [])
        return []

    routes = RouteTable(
        parse_routes("routes", "PUT /v3/artifacts/{id}/blob upload\nDELETE /v2/images/{id} ignore")
    )
    middleware = NotificationMiddleware(app, Notifier(), routes=routes)
    call(middleware, "PUT", "/v3/artifacts/a1/blob", b"data")
    call(middleware, "DELETE", "/v2/images/a1")
    assert notifications.event_types == ["image.upload", "image.activate"]


def test_routes_option_through_the_filter_factory(notifications: CapturedNotifications) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "application/json")])
        return [b'{"id": "s1"}']

    wrapped = filter_factory({}, routes="POST /v2/images/{id}/stage create")(app)
    call(wrapped, "POST", "/v2/images/s1/stage", b"x")
    assert notifications.event_types == ["image.create"]


def test_image_lookup_off_degrades_payloads_to_the_id(notifications: CapturedNotifications) -> None:
    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["REQUEST_METHOD"])
        start_response("204 No Content", [])
        return []

    call(NotificationMiddleware(app, Notifier(), image_lookup=False), "DELETE", "/v2/images/d1")
    assert calls == ["DELETE"]
    assert notifications[0].payload["id"] == "d1"


def test_non_image_requests_reach_the_app_with_the_same_objects() -> None:
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((environ, start_response))
        start_response("200 OK", [])
        return [b"ok"]

    middleware = NotificationMiddleware(app, Notifier())
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/healthcheck"}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        return None

    result = middleware(environ, start_response)
    assert result == [b"ok"] and seen == [(environ, start_response)]


def test_remembered_route_answers_are_the_searched_ones() -> None:
    """The route table remembers recent answers; a remembered answer is the searched one."""
    from instrument.routes import _REMEMBERED, _REMEMBERED_LENGTH

    table = RouteTable(parse_routes("routes", "GET /v2/images/{id}/file ignore"))
    requests = [
        ("POST", "/v2/images"),
        ("GET", "/v2/images"),
        ("PATCH", "/v2/images/1"),
        ("DELETE", "/v2/images/1"),
        ("GET", "/v2/images/1/file"),  # switched off by the operator's route
        ("PUT", "/v1/images/2"),
        ("GET", "/image/v2.1/images/3/file/"),
        ("GET", "/v1/images/" + "x" * _REMEMBERED_LENGTH),  # too long to remember
    ]
    first = [table.match(method, path) for method, path in requests]
    for _ in range(_REMEMBERED + 1):  # push everything out once, then ask again
        table.match("DELETE", f"/v2/images/{_}")
    assert [table.match(method, path) for method, path in requests] == first
    assert [table._search(method, path) for method, path in requests] == first
    assert [m and (m.kind, m.image_id, m.prefix, m.version) for m in first] == [
        ("create", None, "", "v2"),
        None,
        ("update", "1", "", "v2"),
        ("delete", "1", "", "v2"),
        None,
        ("update_with_data", "2", "", "v1"),
        ("send", "3", "/image", "v2.1"),
        ("send", "x" * _REMEMBERED_LENGTH, "", "v1"),
    ]
    assert table._remembered.cache_info().currsize == _REMEMBERED
