"""Property: whatever the request and the application do, the client sees the bare app's response.

Hypothesis throws random methods, paths, headers, bodies, statuses, application
exceptions and iterable shapes at the middleware. The response (status, headers,
body, exception) must be identical to the bare application's, the application's
iterable must be closed exactly once, and no exception from the kit may escape.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instrument import Notification, Notifier, Strategy
from instrument.middleware import NotificationMiddleware


class AppFailure(Exception):
    pass


class Exploding(Strategy):
    name = "exploding"

    def emit(self, notification: Notification) -> None:
        raise RuntimeError("strategy down")


@dataclass(frozen=True)
class Behaviour:
    status: str
    headers: tuple[tuple[str, str], ...]
    chunks: tuple[bytes, ...]
    shape: str  # list | generator | lazy | object
    raise_at: int | None  # None, -1 (in __call__), or the chunk index to raise before


class ClosingIterable:
    def __init__(self, chunks: list[bytes], raise_at: int | None, closes: list[int]) -> None:
        self._chunks = iter(enumerate(chunks))
        self._raise_at = raise_at
        self._closes = closes

    def __iter__(self) -> ClosingIterable:
        return self

    def __next__(self) -> bytes:
        index, chunk = next(self._chunks)
        if index == self._raise_at:
            raise AppFailure(f"failed at {index}")
        return chunk

    def close(self) -> None:
        self._closes.append(1)


class Ledger:
    """Which response iterables the app created and how often each was closed."""

    def __init__(self) -> None:
        self.created: list[list[int]] = []

    def new(self) -> list[int]:
        closes: list[int] = []
        self.created.append(closes)
        return closes


def make_app(behaviour: Behaviour, ledger: Ledger) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.input"].read()
        if behaviour.raise_at == -1:
            raise AppFailure("failed in call")
        chunks = list(behaviour.chunks)
        if behaviour.shape == "lazy":
            return lazy(start_response, chunks, ledger.new())
        start_response(behaviour.status, list(behaviour.headers))
        if behaviour.shape == "list" and behaviour.raise_at is None:
            return chunks
        return ClosingIterable(chunks, behaviour.raise_at, ledger.new())

    def lazy(start_response: Any, chunks: list[bytes], closes: list[int]) -> Any:
        closes.append(0)  # a generator's finally runs only once started: count from here
        try:
            start_response(behaviour.status, list(behaviour.headers))
            for index, chunk in enumerate(chunks):
                if index == behaviour.raise_at:
                    raise AppFailure(f"failed at {index}")
                yield chunk
        finally:
            closes.append(1)

    return app


def run(app: Any, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[Any, ...]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "REMOTE_ADDR": "127.0.0.1",
        **{"HTTP_" + k: v for k, v in headers.items()},
    }
    seen: list[Any] = []

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        seen.append((status, list(response_headers)))
        return lambda data: None

    body_out: list[bytes] = []
    error = None
    try:
        result = app(environ, start_response)
        try:
            body_out.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
    except AppFailure as exc:
        error = repr(exc)
    return tuple(seen), b"".join(body_out), error


statuses = st.sampled_from(
    [
        "200 OK",
        "201 Created",
        "204 No Content",
        "206 Partial Content",
        "302 Found",
        "400 Bad Request",
        "404 Not Found",
        "409 Conflict",
        "500 Internal Server Error",
        "503 Service Unavailable",
    ]
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
response_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "Content-Type",
                "Content-Length",
                "Content-Range",
                "X-Image-Meta-Id",
                "X-Image-Meta-Size",
                "X-Image-Meta-Status",
                "Location",
            ]
        ),
        header_values,
    ),
    max_size=4,
).map(tuple)
chunks = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [b'{"id": "i1", "status": "active"}', b'{"image": {"id": "i2"}}', b"{", b"[]"]
        ),
    ),
    max_size=4,
).map(tuple)
behaviours = st.builds(
    Behaviour,
    status=statuses,
    headers=response_headers,
    chunks=chunks,
    shape=st.sampled_from(["list", "generator", "lazy", "object"]),
    raise_at=st.one_of(st.none(), st.integers(min_value=-1, max_value=3)),
)
segments = st.sampled_from(
    [
        "v1",
        "v2",
        "v2.1",
        "images",
        "i1",
        "file",
        "actions",
        "deactivate",
        "reactivate",
        "detail",
        "stage",
        "x",
        "",
    ]
)
paths = st.lists(segments, max_size=5).map(lambda parts: "/" + "/".join(parts))
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
request_headers = st.dictionaries(
    st.sampled_from(
        ["RANGE", "X_TENANT_ID", "X_USER_ID", "TRANSFER_ENCODING", "X_IMAGE_META_LOCATION"]
    ),
    header_values,
    max_size=3,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    behaviour=behaviours,
    method=methods,
    path=paths,
    headers=request_headers,
    body=st.binary(max_size=30),
    broken_strategy=st.booleans(),
)
def test_client_sees_exactly_the_bare_application(
    behaviour: Behaviour,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    broken_strategy: bool,
) -> None:
    logging.disable(logging.CRITICAL)
    try:
        bare_ledger = Ledger()
        bare = run(make_app(behaviour, bare_ledger), method, path, headers, body)
        ledger = Ledger()
        notifier = Notifier([Exploding()] if broken_strategy else None)
        middleware = NotificationMiddleware(make_app(behaviour, ledger), notifier)
        wrapped = run(middleware, method, path, headers, body)
    finally:
        logging.disable(logging.NOTSET)
    assert wrapped == bare
    # Every iterable the app made (the client's and any subrequest's) is closed exactly once.
    assert all(closes.count(1) == 1 for closes in ledger.created), ledger.created
    assert all(closes.count(1) == 1 for closes in bare_ledger.created), bare_ledger.created
