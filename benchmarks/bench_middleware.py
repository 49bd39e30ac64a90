"""Middleware CPU overhead per request, measured side by side with the bare application.

    python benchmarks/bench_middleware.py

Prints the per-request cost of the bare app, of the same app behind the middleware,
and the difference: for requests that are not image events, and for lifecycle
requests (memory strategy, metadata read from the response body, so no subrequest):
POST /v2/images (its path repeats), PATCH with a new image id every time (nothing
about the path can be remembered), and POST without orjson (``instrument[speedups]``).
Runs are interleaved and the best of many short repeats is kept, so other load on the
machine disturbs both sides alike.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from instrument import Notifier, images
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
        "tags": ["test"],
        "disk_format": "qcow2",
        "container_format": "bare",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "self": "/v2/images/8a3e",
        "file": "/v2/images/8a3e/file",
        "schema": "/v2/schemas/image",
        "min_disk": 0,
        "min_ram": 0,
        "checksum": "ee1eca47dc88f4879d8a229cc70a07c6",
        "os_hash_algo": "sha512",
        "os_hash_value": "1b03ca1bc3fafe448b90583c12f367949f8b0e665685979d95b004e48574b953"
        "316799e23240f4f739d1b5eb4c4ca24d38fdc6f4f9d8247a2bc64db25d6bbdb2",
        "os_hidden": False,
        "virtual_size": None,
        "os_distro": "cirros",
        "hw_disk_bus": "virtio",
    }
).encode()


#: Many short runs rather than a few long ones: the best of them is what the code costs
#: when nothing else on the machine gets in the way.
REPEATS = 31


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("201 Created", [("Content-Type", "application/json")])
    return [IMAGE]


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def per_request(
    target: Callable[..., Any], environ: dict[str, Any] | list[dict[str, Any]], n: int
) -> float:
    """Seconds per request; *environ* may be a list of environs, taken in turn."""
    environs = environ if isinstance(environ, list) else [environ]
    started = time.perf_counter()
    for number in range(n):
        body = target(dict(environs[number % len(environs)]), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - started) / n


def compare(
    label: str,
    wrapped: Callable[..., Any],
    environ: dict[str, Any] | list[dict[str, Any]],
    n: int,
) -> float:
    bare_best = wrapped_best = float("inf")
    for _ in range(REPEATS):
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
    print(f"middleware overhead per request (best of {REPEATS} runs, interleaved)")
    compare("not an image event (/v2/schemas)", middleware, other, 40_000)
    compare("not an event (GET /v2/images)", middleware, listing, 40_000)
    compare("lifecycle: POST /v2/images", middleware, create, 4_000)
    # A new image id on every request: nothing about the path can be remembered.
    updates = [
        {**base, "REQUEST_METHOD": "PATCH", "PATH_INFO": f"/v2/images/{uuid.uuid4()}"}
        for _ in range(4_000)
    ]
    compare("lifecycle: PATCH /v2/images/<new id>", middleware, updates, 4_000)
    if images._fast_loads is not None:  # the same without instrument[speedups] (orjson)
        fast_loads, images._fast_loads = images._fast_loads, None
        compare("lifecycle, without orjson", middleware, create, 4_000)
        images._fast_loads = fast_loads
    else:
        print("(orjson is not installed: pip install 'instrument[speedups]')")
    print("goals: <= 2 µs for requests that are not events, <= 30 µs for a lifecycle request")


if __name__ == "__main__":
    main()
