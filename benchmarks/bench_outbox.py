"""The durable outbox (journal) against one local RabbitMQ, figures printed side by side.

* ``emit()`` latency, memory only vs journal, broker up, down and restarting, with
  the CPU idle or busy between bursts of emits (goal with the journal: p50 <= 5 us,
  p99 <= 20 us);
* intake: notifications per second one process journals with the broker down
  (goal >= 50,000/s, no overflow);
* backlog drain: N notifications kept during an outage, delivered by a new engine once
  the broker is back (rabbit, confirms, durable queues, persistent; goal >= 10,000
  msg/s), with the resident memory growth while draining (goal < 50 MiB).

Usage::

    python benchmarks/bench_outbox.py [--url amqp://...] [--backlog 300000] [--pin]

``--pin`` runs this process (the emitting thread and the engine's workers) on CPU 0 and
the private RabbitMQ node on the other CPUs, as a broker on another host would be.
Unpinned, on this 2-core VM, the node's Erlang schedulers take the emitting thread's
CPU whenever a batch arrives: with the broker up and the CPU idle between bursts, 1.2 %
of emits then took over 20 us (p99 21-22 us), against 0.3-0.7 % (p99 8-10 us) with
only the node kept off the emitter's CPU. That is the broker's cost, not the kit's.

Timed assertions never live in tests/; this script only reports.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _processes import SERVER_CPUS, client_cpus, pin_tree
from bench_delivery import busy_pause, idle_pause, names, notes, percentiles, timed_emits

from instrument.strategies.rabbit import RabbitStrategy

FAST = {"rabbit_retry_backoff": 0.05, "rabbit_retry_max_backoff": 0.5}
_DRAIN_LIMIT = 300.0  # seconds; the goal (10,000 msg/s) drains 300,000 in 30


def rss_mib(field: str = "VmRSS") -> float:
    """Resident memory (``RssAnon``: the heap only, not the mapped journal segments)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def bench_latency(url: str, dead: str, n: int, outbox: str) -> dict[str, list[float]]:
    results = {}
    for label, target in (("up", url), ("down", dead)):
        for kept in (False, True):
            for pace, pause in (("idle", idle_pause), ("busy", busy_pause)):
                options: dict[str, Any] = {**FAST, "queue_size": 10 * n, "close_timeout": 0.5}
                if kept:
                    options["outbox_path"] = f"{outbox}/latency-{label}-{pace}"
                with RabbitStrategy(transport_url=target, **options, **names()) as strategy:
                    strategy.emit(notes(1)[0])  # lazy start outside the timing
                    memory = "journal" if kept else "memory "
                    name = f"broker {label:4}, {memory}, {pace} between bursts"
                    results[name] = timed_emits(strategy, notes(n), lambda i: None, pause)
                    if target is url:
                        strategy.flush(60)
    return results


def _starting(thread: threading.Thread, at: int) -> Callable[[int], None]:
    """Start *thread* at emit number *at*."""
    return lambda index: thread.start() if index == at else None


def bench_restart(
    node: Any, url: str, n: int, outbox: str, broker_cpus: set[int] | None
) -> dict[str, list[float]]:
    """The journal while the broker is stopped a third of the way in, then started again
    (on *broker_cpus* again when given)."""

    def restart() -> None:
        if broker_cpus:  # the new node inherits this thread's CPUs from its first instant
            os.sched_setaffinity(0, broker_cpus)
        node.restart()
        if broker_cpus:
            pin_tree(node.pid, broker_cpus)

    results = {}
    for pace, pause in (("idle", idle_pause), ("busy", busy_pause)):
        options = {**FAST, "close_timeout": 0.5, "outbox_path": f"{outbox}/restart-{pace}"}
        with RabbitStrategy(transport_url=url, **options, **names()) as strategy:
            strategy.emit(notes(1)[0])
            stopper = threading.Thread(target=restart)
            name = f"broker restarted, journal, {pace} between bursts"
            results[name] = timed_emits(strategy, notes(n), _starting(stopper, n // 3), pause)
            stopper.join()
            strategy.flush(60)
    return results


def bench_intake(dead: str, n: int, outbox: str) -> tuple[float, dict[str, Any]]:
    with RabbitStrategy(
        transport_url=dead, outbox_path=f"{outbox}/intake", close_timeout=0, **FAST, **names()
    ) as strategy:
        batch = notes(n)
        strategy.emit(batch[0])
        started = time.perf_counter()
        for note in batch[1:]:
            strategy.emit(note)
        rate = (n - 1) / (time.perf_counter() - started)
        return rate, strategy.stats()


def bench_drain(
    url: str, dead: str, n: int, outbox: str
) -> tuple[float, tuple[float, float], list[float]]:
    path, tags = f"{outbox}/drain", names()
    with RabbitStrategy(transport_url=dead, outbox_path=path, close_timeout=0, **FAST, **tags) as s:
        for start in range(0, n, 10000):
            for note in notes(min(10000, n - start)):
                s.emit(note)
    peak, before = [0.0, 0.0], (rss_mib(), rss_mib("RssAnon"))
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mib())
            peak[1] = max(peak[1], rss_mib("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with RabbitStrategy(
        transport_url=url, outbox_path=path, rabbit_durable_queues=True, batch_size=1000, **tags
    ) as strategy:
        started = time.perf_counter()
        deadline = started + _DRAIN_LIMIT
        # adopted once the first engine's worker ended; bounded: a broker that never
        # takes them is reported, not waited for
        while (sent := strategy.stats()["sent"]) < n and time.perf_counter() < deadline:
            strategy.flush(max(0.1, deadline - time.perf_counter()))
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    if sent < n:
        print(f"  drain gave up after {_DRAIN_LIMIT:.0f} s: {sent} of {n} sent")
    return sent / elapsed, before, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing broker (default: start a private node)")
    parser.add_argument("--emits", type=int, default=20000)
    parser.add_argument("--intake", type=int, default=200000)
    parser.add_argument("--backlog", type=int, default=300000)
    parser.add_argument(
        "--pin", action="store_true", help="this process on CPU 0, the private broker elsewhere"
    )
    args = parser.parse_args()
    broker_cpus = client_cpus() if args.pin else None
    if args.pin and not broker_cpus:
        parser.error("--pin needs at least two CPUs")
    logging.basicConfig(level=logging.CRITICAL)
    node, url = None, args.url
    if url is None:
        from tests.support.rabbitmq import RabbitNode, ensure_installed

        ensure_installed()
        node = RabbitNode().start()
        url = node.url
        if broker_cpus:
            pin_tree(node.pid, broker_cpus)
    if args.pin:  # threads started from now on (the engines' workers) inherit it
        os.sched_setaffinity(0, SERVER_CPUS)
    dead = url.rsplit(":", 1)[0] + ":1//"  # nothing listens on port 1
    try:
        with tempfile.TemporaryDirectory() as outbox:
            broker = ", the private broker elsewhere" if node is not None else ""
            pinned = f" (this process on CPU 0{broker})" if args.pin else ""
            print(f"emit() latency, {args.emits} emits each{pinned}:")
            latencies = bench_latency(url, dead, args.emits, outbox)
            if node is not None:
                latencies.update(bench_restart(node, url, args.emits, outbox, broker_cpus))
            for label, samples in latencies.items():
                print(f"  {label:48} {percentiles(samples)}")
            rate, stats = bench_intake(dead, args.intake, outbox)
            print(
                f"intake, broker down: {rate:9.0f} notifications/s journaled "
                f"(stored {stats['stored']}, overflow {stats['overflow']})"
            )
            drain, before, peak = bench_drain(url, dead, args.backlog, outbox)
            print(
                f"backlog drain of {args.backlog}: {drain:9.0f} msg/s, "
                f"RSS {before[0]:.0f} MiB -> peak {peak[0]:.0f} MiB (+{peak[0] - before[0]:.0f}"
                f" MiB; anonymous +{peak[1] - before[1]:.0f} MiB, the rest is the new "
                "engine's own mapped segments)"
            )
    finally:
        if node is not None:
            node.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
