"""A tiny in-process WSGI client for tests: every call runs under wsgiref.validate."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class Reply:
    status: str
    headers: list[tuple[str, str]]
    body: bytes
    environ: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def code(self) -> int:
        return int(self.status[:3])

    def json(self) -> Any:
        return json.loads(self.body)


def make_environ(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    script_name: str = "",
) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": script_name,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "192.0.2.10",
        "QUERY_STRING": "",
    }
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    setup_testing_defaults(environ)
    return environ


def call(
    app: App,
    method: str,
    path: str,
    body: bytes | Any = b"",
    headers: dict[str, str] | None = None,
    *,
    validate: bool = True,
    script_name: str = "",
) -> Reply:
    """Run one request through *app* and read the whole response."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    environ = make_environ(method, path, body, headers, script_name)
    captured: list[Any] = []

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        captured[:] = [status, response_headers]
        return lambda data: None

    runner = validator(app) if validate else app
    app_iter = runner(environ, start_response)
    try:
        data = b"".join(app_iter)
    finally:
        close = getattr(app_iter, "close", None)
        if close is not None:
            close()
    return Reply(captured[0], captured[1], data, environ)
