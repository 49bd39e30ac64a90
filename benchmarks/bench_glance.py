"""The filter inside a real Glance 33: requests/s and a 256 MiB download, bare vs filtered.

Uses the Glance virtualenv and configuration ``tests/glance`` builds (cached under
``~/.cache``; the first run installs it, about a minute). Each round starts Glance
(gunicorn, one sync worker, as the parity test does) once bare and once with the filter
(``noop`` and ``logging`` strategies), interleaved, and measures:

* create + update (PATCH) + delete: requests/s with a few concurrent clients;
* a 256 MiB image downloaded from the filesystem store: MiB/s, best of three.

Printed: the median of the rounds and the ratios against bare. Timed assertions never
live in tests/; this script only reports.

Usage::

    python benchmarks/bench_glance.py [--rounds 3] [--seconds 8] [--clients 4]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.glance.configs import Setup  # noqa: E402
from tests.glance.environment import ensure_venv, running_glance  # noqa: E402

# The parity test caps images at 9 MiB (to test the 413); the download here is larger.
_NO_CAP = "[DEFAULT]\nimage_size_cap = 1099511627776\n"
MODES = {
    "bare": Setup(filtered=False, extra_conf=_NO_CAP),
    "noop": Setup(filter_options=("notifier_strategy = noop",), extra_conf=_NO_CAP),
    # The parity test's own filter section: the logging strategy into a file.
    "logging": Setup(extra_conf=_NO_CAP),
}
IMAGE_MIB = 256
_PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
_JSON = {"Content-Type": "application/json"}


def request(port: int, method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    if response.status >= 400:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
    return data


def metadata_cycle(port: int) -> int:
    """create, update, delete one image: three requests."""
    meta = json.dumps({"name": "bench", "disk_format": "raw", "container_format": "bare"})
    image = json.loads(request(port, "POST", "/v2/images", meta.encode(), **_JSON))
    path = f"/v2/images/{image['id']}"
    patch = json.dumps([{"op": "replace", "path": "/name", "value": "bench-2"}]).encode()
    request(port, "PATCH", path, patch, **_PATCH)
    request(port, "DELETE", path)
    return 3


def requests_per_second(port: int, clients: int, seconds: float) -> float:
    done: list[int] = []
    stop_at = time.monotonic() + seconds

    def client() -> None:
        count = 0
        while time.monotonic() < stop_at:
            count += metadata_cycle(port)
        done.append(count)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def download_mib_per_second(port: int) -> float:
    meta = json.dumps({"name": "big", "disk_format": "raw", "container_format": "bare"})
    image = json.loads(request(port, "POST", "/v2/images", meta.encode(), **_JSON))
    path = f"/v2/images/{image['id']}/file"
    request(
        port, "PUT", path, b"\0" * (IMAGE_MIB << 20), **{"Content-Type": "application/octet-stream"}
    )
    best = 0.0
    for _ in range(3):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        started = time.monotonic()
        connection.request("GET", path)
        response = connection.getresponse()
        received = 0
        while chunk := response.read(1 << 20):
            received += len(chunk)
        elapsed = time.monotonic() - started
        connection.close()
        assert received == IMAGE_MIB << 20, received
        best = max(best, IMAGE_MIB / elapsed)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    venv = ensure_venv()
    results: dict[str, dict[str, list[float]]] = {m: {"rps": [], "mibs": []} for m in MODES}
    for _ in range(args.rounds):
        for mode, setup in MODES.items():
            with contextlib.ExitStack() as stack:
                work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
                glance = stack.enter_context(running_glance(venv, work, setup))
                metadata_cycle(glance.port)  # warm up
                rps = requests_per_second(glance.port, args.clients, args.seconds)
                results[mode]["rps"].append(rps)
                results[mode]["mibs"].append(download_mib_per_second(glance.port))
    bare_rps = statistics.median(results["bare"]["rps"])
    bare_mibs = statistics.median(results["bare"]["mibs"])
    print(f"\nGlance 33, gunicorn (1 sync worker): median of {args.rounds} interleaved rounds")
    print(f"{'mode':8} {'req/s':>8} {'vs bare':>8} {'256 MiB MiB/s':>14} {'vs bare':>8}")
    for mode, figures in results.items():
        rps, mibs = statistics.median(figures["rps"]), statistics.median(figures["mibs"])
        print(f"{mode:8} {rps:8.1f} {rps / bare_rps:8.3f} {mibs:14.1f} {mibs / bare_mibs:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
