"""The filter under load: concurrent HTTP clients against real servers, bare vs filtered.

N client threads (spread over a few processes) run a realistic image mix against the
example image API: create, update (PATCH), upload (64 KiB to 1 MiB), download, a
ranged download, delete. Each configuration is served by waitress and by gunicorn
(gthread), bare and behind the filter with the noop, logging, rabbit and rabbit +
outbox strategies; rounds are interleaved so the machine's drift hits every mode
alike. For scale, a reference row shows what a filter of a known cost does to the same
server: a pass-through that spends ``--reference-us`` (20) microseconds of CPU per
request and nothing else. Printed per server and mode: requests/s, p50/p99 latency, the server
process's CPU milliseconds per request (the broker's and the clients' excluded), the
internal metadata subrequests per request, the filter's own CPU per request (its calls'
thread time minus the application's inside them, ``_filter_time.py``: a download's
body, iterated by the server after the call, is not in it; the reference's, what it
spent), and the ratios against bare and noop.

Usage::

    python benchmarks/bench_load.py                     # 16 clients, 3 rounds of 6 s
    python benchmarks/bench_load.py --clients 50 --seconds 20 --rounds 3
    python benchmarks/bench_load.py --servers waitress --modes bare,noop
    python benchmarks/bench_load.py --pin      # the server on CPU 0, the clients elsewhere

``--pin`` keeps the server process on one CPU. Unpinned, on this 2-core VM, the
server's threads hand the GIL to each other across the two CPUs, and every hand-over
(any call that releases the GIL: a socket operation, a lock wait) costs a cross-CPU
wake-up several times its own work; the CPU per request then says more about the
scheduler than about the filter. Pinned, bare and filtered alike run faster, and the
ratios are those of the work each does. Both are worth reading.

A private RabbitMQ node is started for the rabbit modes (tests/support). Timed
assertions never live in tests/; this script only reports.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, stop_process, wait_for_port  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _processes import SERVER_CPUS, client_cpus, tree_cpu  # noqa: E402

MODES = ("bare", "reference", "noop", "logging", "rabbit", "rabbit+outbox")
# Also accepted: "noop-nolookup" (the noop filter with image_lookup = false).
#: The reference mode's cost per request: a filter this cheap is at about 0.95 of bare.
REFERENCE_US = 20.0
SERVERS = ("waitress", "gunicorn")
SIZES = (64 * 1024, 256 * 1024, 1024 * 1024)
CLIENT_PROCESSES = 2


# The clients ----------------------------------------------------------------------


def lifecycle(connection: http.client.HTTPConnection, rng: random.Random) -> list[float]:
    """One image's life: six requests; returns their latencies in seconds."""
    latencies: list[float] = []

    def request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
        started = time.perf_counter()
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        latencies.append(time.perf_counter() - started)
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
        return data

    meta = {"name": "load", "disk_format": "raw", "container_format": "bare"}
    created = request("POST", "/v2/images", json.dumps(meta).encode(), **_JSON)
    path = f"/v2/images/{json.loads(created)['id']}"
    patch = [{"op": "replace", "path": "/name", "value": "load-renamed"}]
    request("PATCH", path, json.dumps(patch).encode(), **_PATCH)
    request("PUT", f"{path}/file", os.urandom(rng.choice(SIZES)), **_OCTETS)
    request("GET", f"{path}/file")
    request("GET", f"{path}/file", Range="bytes=0-4095")
    request("DELETE", path)
    return latencies


_JSON = {"Content-Type": "application/json", "X-Project-Id": "load", "X-User-Id": "load"}
_PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
_OCTETS = {"Content-Type": "application/octet-stream"}


def client_process(
    port: int, threads: int, seconds: float, seed: int, out: Any, cpus: set[int] | None
) -> None:
    """*threads* clients for *seconds* (on *cpus*); sends the latencies of finished requests."""
    import threading

    if cpus:
        os.sched_setaffinity(0, cpus)

    stop_at = time.monotonic() + seconds
    results: list[float] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < stop_at:
            latencies = lifecycle(connection, rng)
            with lock:
                results.extend(latencies)
        connection.close()

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.send(results)


def drive(port: int, clients: int, seconds: float, cpus: set[int] | None = None) -> list[float]:
    """All clients for *seconds*; the latencies of every finished request."""
    context = multiprocessing.get_context("fork")
    pipes, processes = [], []
    for number in range(CLIENT_PROCESSES):
        share = clients // CLIENT_PROCESSES + (number < clients % CLIENT_PROCESSES)
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=client_process, args=(port, share, seconds, number, sender, cpus)
        )
        process.start()
        pipes.append(receiver)
        processes.append(process)
    latencies: list[float] = []
    for receiver in pipes:
        latencies.extend(receiver.recv())
    for process in processes:
        process.join()
    return latencies


# The servers ----------------------------------------------------------------------


def server_command(server: str, port: int) -> list[str]:
    if server == "waitress":
        return [
            sys.executable,
            "-m",
            "waitress",
            f"--listen=127.0.0.1:{port}",
            "--threads=8",
            "benchmarks.load_app:app",
        ]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--log-level",
        "warning",
        "benchmarks.load_app:app",
    ]


def mode_environment(
    mode: str, broker_url: str | None, scratch: Path, reference_us: float = REFERENCE_US
) -> dict[str, str]:
    if mode in ("bare", "reference"):
        env = {"LOAD_MODE": mode, "LOAD_DATA": str(scratch)}
        return {**env, "LOAD_REFERENCE_US": str(reference_us)}
    env = {"LOAD_MODE": "filter", "LOAD_DATA": str(scratch)}
    strategy = {"rabbit+outbox": "rabbit", "noop-nolookup": "noop"}.get(mode, mode)
    if mode == "noop-nolookup":
        env["INSTRUMENT_IMAGE_LOOKUP"] = "false"
    env["INSTRUMENT_STRATEGY"] = strategy
    if mode == "logging":
        env["INSTRUMENT_LOG_FILE"] = str(scratch / "notifications.log")
    if strategy == "rabbit":
        env["INSTRUMENT_TRANSPORT_URL"] = broker_url or ""
    if mode == "rabbit+outbox":
        env["INSTRUMENT_OUTBOX_PATH"] = str(scratch / "outbox")
    return env


@contextlib.contextmanager
def serving(server: str, env: dict[str, str], pin: bool) -> Iterator[tuple[int, int]]:
    """Start *server* (on CPU 0 when *pin*); yields (port, pid)."""
    port = free_port()
    process = subprocess.Popen(
        server_command(server, port),
        preexec_fn=(lambda: os.sched_setaffinity(0, SERVER_CPUS)) if pin else None,
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # waitress warns of every queued task under load
    )
    try:
        wait_for_port(port, timeout=30)
        yield port, process.pid
    finally:
        stop_process(process)


def counts(port: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/_load/counts")
    answer: dict[str, float] = json.loads(connection.getresponse().read())
    connection.close()
    return answer


def measure(server: str, mode: str, args: argparse.Namespace, broker: str | None) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-load-")))
        environment = mode_environment(mode, broker, scratch, args.reference_us)
        port, pid = stack.enter_context(serving(server, environment, args.pin))
        cpus = client_cpus() if args.pin else None
        drive(port, args.clients, 1.0, cpus)  # warm up: imports, connections, caches
        before_cpu, before = tree_cpu(pid), counts(port)
        started = time.monotonic()
        latencies = drive(port, args.clients, args.seconds, cpus)
        elapsed = time.monotonic() - started
        after_cpu, after = tree_cpu(pid), counts(port)
    requests = int(after["requests"] - before["requests"])
    ordered = sorted(latencies)
    return {
        "rps": len(latencies) / elapsed,
        "p50": ordered[len(ordered) // 2] * 1000,
        "p99": ordered[int(len(ordered) * 0.99)] * 1000,
        "cpu_ms": (after_cpu - before_cpu) * 1000 / max(requests, 1),
        "subrequests": (after["subrequests"] - before["subrequests"]) / max(requests, 1),
        "filter_us": (after["filter_cpu"] - before["filter_cpu"]) * 1e6 / max(requests, 1),
    }


# The report -----------------------------------------------------------------------


def report(server: str, results: dict[str, list[dict[str, Any]]], pinned: str) -> None:
    def median(mode: str, key: str) -> float:
        return statistics.median(run[key] for run in results[mode])

    print(f"\n{server}: median of {len(next(iter(results.values())))} interleaved rounds{pinned}")
    print(
        f"{'mode':15} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} "
        f"{'subreq/req':>11} {'filter us/req':>14} {'req/s vs bare':>14} {'p99 vs bare':>12} "
        f"{'CPU vs noop':>12}"
    )
    for mode in results:
        rps, p99, cpu = median(mode, "rps"), median(mode, "p99"), median(mode, "cpu_ms")
        vs_bare = rps / median("bare", "rps") if "bare" in results else float("nan")
        p99_bare = p99 / median("bare", "p99") if "bare" in results else float("nan")
        vs_noop = cpu / median("noop", "cpu_ms") if "noop" in results else float("nan")
        print(
            f"{mode:15} {rps:8.0f} {median(mode, 'p50'):8.2f} {p99:8.2f} {cpu:11.3f} "
            f"{median(mode, 'subrequests'):11.2f} {median(mode, 'filter_us'):14.1f} "
            f"{vs_bare:14.3f} {p99_bare:12.3f} {vs_noop:12.3f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--url", help="an existing broker for the rabbit modes")
    parser.add_argument("--pin", action="store_true", help="the server on CPU 0 only")
    parser.add_argument(
        "--reference-us",
        type=float,
        default=REFERENCE_US,
        help="the reference mode's CPU microseconds per request",
    )
    args = parser.parse_args()
    if args.pin and not client_cpus():
        parser.error("--pin needs at least two CPUs (the server's and the clients')")
    servers, modes = args.servers.split(","), args.modes.split(",")
    with contextlib.ExitStack() as stack:
        broker = args.url
        if broker is None and any(mode.startswith("rabbit") for mode in modes):
            from tests.support.rabbitmq import running_node

            broker = stack.enter_context(running_node()).url
        for server in servers:
            results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
            for _ in range(args.rounds):
                for mode in modes:
                    results[mode].append(measure(server, mode, args, broker))
            report(server, results, ", server pinned to CPU 0" if args.pin else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
