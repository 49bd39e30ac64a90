"""Middleware CPU overhead per request, measured side by side with the bare application.

    python benchmarks/bench_middleware.py

Prints the per-request cost of the bare app, of the same app behind the middleware,
and the difference, for a request that is not an image event and for a lifecycle
request (image.create, memory strategy, metadata read from the response body, so no
subrequest). Runs are interleaved and the best of several repeats is kept, so other
load on the machine disturbs both sides alike.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

from instrument import Notifier
from instrument.middleware import NotificationMiddleware
from instrument.strategies.memory import MemoryStrategy

IMAGE = json.dumps(
    {
        "id": "8a3e2f4c-5b21-4a8f-9d8e-0c1f2a3b4c5d",
        "name": "cirros",
        "status": "queued",
        "visibility": "shared",
        "protected": False,
        "owner": "p1",
        "size": None,
        "tags": [],
        "disk_format": "qcow2",
        "container_format": "bare",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "self": "/v2/images/8a3e",
        "file": "/v2/images/8a3e/file",
        "schema": "/v2/schemas/image",
        "min_disk": 0,
        "min_ram": 0,
    }
).encode()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("201 Created", [("Content-Type", "application/json")])
    return [IMAGE]


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def per_request(target: Callable[..., Any], environ: dict[str, Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        body = target(dict(environ), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - started) / n


def compare(label: str, wrapped: Callable[..., Any], environ: dict[str, Any], n: int) -> float:
    bare_best = wrapped_best = float("inf")
    for _ in range(7):
        bare_best = min(bare_best, per_request(app, environ, n))
        wrapped_best = min(wrapped_best, per_request(wrapped, environ, n))
    overhead = (wrapped_best - bare_best) * 1e6
    print(
        f"{label:<36} bare {bare_best * 1e6:7.2f} µs   instrumented {wrapped_best * 1e6:7.2f} µs"
        f"   overhead {overhead:6.2f} µs   ratio {wrapped_best / bare_best:5.2f}"
    )
    return overhead


def main() -> None:
    memory = MemoryStrategy(memory_max=1000)
    middleware = NotificationMiddleware(app, Notifier(memory, publisher_id="bench"))
    base = {
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(b""),
        "REMOTE_ADDR": "127.0.0.1",
    }
    other = {**base, "REQUEST_METHOD": "GET", "PATH_INFO": "/v2/schemas/image"}
    listing = {**base, "REQUEST_METHOD": "GET", "PATH_INFO": "/v2/images"}
    create = {**base, "REQUEST_METHOD": "POST", "PATH_INFO": "/v2/images", "CONTENT_LENGTH": "0"}
    print("middleware overhead per request (best of 7, interleaved)")
    compare("not an image event (/v2/schemas)", middleware, other, 200_000)
    compare("not an event (GET /v2/images)", middleware, listing, 200_000)
    compare("lifecycle: POST /v2/images", middleware, create, 20_000)
    print("goals: <= 2 µs for requests that are not events, <= 30 µs for a lifecycle request")


if __name__ == "__main__":
    main()
