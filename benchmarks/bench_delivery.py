"""Delivery benchmarks against one local RabbitMQ, printed as figures and ratios in one run.

* ``emit()`` latency on the request path (p50, p99, max) with the broker up, down, and
  stopped in the middle of the run (goal: p99 <= 20 us in all three);
* sustained delivery throughput with publisher confirms, durable queues and persistent
  messages: the rabbit strategy vs raw kombu ``Producer.publish`` with a confirm per
  message, vs oslo.messaging's ``messagingv2`` notifier (goal: >= 3x both).

Usage::

    python benchmarks/bench_delivery.py            # starts a private node (tests/support)
    python benchmarks/bench_delivery.py --url amqp://guest:guest@127.0.0.1:5672//

Timed assertions never live in tests/; this script only reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from instrument.events import Notification
from instrument.strategies.rabbit import RabbitStrategy

PAYLOAD = {
    "image_id": str(uuid.uuid4()),
    "owner_id": "tenant",
    "receiver_tenant_id": "tenant2",
    "receiver_user_id": "user",
    "destination_ip": "10.0.0.1",
    "bytes_sent": 13287936,
}


def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"rabbit_notification_exchange": f"bench-{tag}", "rabbit_notification_topic": f"b-{tag}"}


def notes(n: int) -> list[Notification]:
    return [Notification.create("image.send", "INFO", PAYLOAD) for _ in range(n)]


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] * 1e6
    p99 = ordered[int(len(ordered) * 0.99)] * 1e6
    return f"p50 {p50:6.2f} us   p99 {p99:6.2f} us   max {ordered[-1] * 1e6:8.1f} us"


def idle_pause() -> None:
    """Between bursts, sleep 1 ms: the CPU goes idle, and its caches (on a VM, its whole
    vCPU) come back cold for the next emit. The harshest case, rarer in a server."""
    time.sleep(0.001)


def busy_pause() -> None:
    """Between bursts, 1 ms of request-like work (JSON in and out): what a request
    thread does before it emits."""
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        json.loads(json.dumps({"id": PAYLOAD["image_id"], "sizes": list(range(20))}))


def timed_emits(
    strategy: RabbitStrategy,
    batch: list[Notification],
    during: Callable[[int], None],
    pause: Callable[[], None] = idle_pause,
) -> list[float]:
    """Emit like requests do (a few at a time, then *pause*), timing each call."""
    samples = []
    clock = time.perf_counter
    for index, note in enumerate(batch):
        during(index)
        started = clock()
        strategy.emit(note)
        samples.append(clock() - started)
        if index % 20 == 19:
            pause()
    return samples


def bench_latency(node: Any, url: str, n: int) -> dict[str, list[float]]:
    results = {}
    options = {"rabbit_retry_backoff": 0.05, "rabbit_retry_max_backoff": 0.5, "queue_size": 10 * n}
    with RabbitStrategy(transport_url=url, **options, **names()) as up:
        up.check()
        results["broker up"] = timed_emits(up, notes(n), lambda i: None)
        up.flush(60)
    dead = url.rsplit(":", 1)[0] + ":1//"  # nothing listens on port 1
    with RabbitStrategy(transport_url=dead, **options, **names()) as down:
        results["broker down"] = timed_emits(down, notes(n), lambda i: None)
        down._delivery.close(timeout=0)
    if node is not None:
        with RabbitStrategy(transport_url=url, **options, **names()) as mid:
            stopper = threading.Thread(target=node.stop)
            results["stopped mid-run"] = timed_emits(
                mid, notes(n), lambda i: stopper.start() if i == n // 3 else None
            )
            stopper.join()
            node.start()
            mid.flush(60)
    return results


def bench_ours(url: str, n: int) -> float:
    with RabbitStrategy(
        transport_url=url, rabbit_durable_queues=True, queue_size=n, **names()
    ) as strategy:
        strategy.check()
        batch = notes(n)
        started = time.perf_counter()
        for note in batch:
            strategy.emit(note)
        assert strategy.flush(120), strategy.stats()
        elapsed = time.perf_counter() - started
        assert strategy.stats()["sent"] == n
    return n / elapsed


def bench_raw_kombu(url: str, n: int) -> float:
    import kombu

    topic = names()["rabbit_notification_topic"]
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as conn:
        exchange = kombu.Exchange(f"raw-{topic}", "topic", durable=True)
        queue = kombu.Queue(f"{topic}.info", exchange, routing_key=f"{topic}.info", durable=True)
        producer = kombu.Producer(conn.channel(), exchange)
        queue(producer.channel).declare()
        bodies = [note.to_json() for note in notes(n)]
        started = time.perf_counter()
        for body in bodies:
            producer.publish(
                body,
                routing_key=f"{topic}.info",
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                retry=False,
            )
        return n / (time.perf_counter() - started)


def bench_oslo(url: str, n: int) -> float | None:
    try:
        import oslo_messaging
        from oslo_config import cfg
    except ImportError:
        return None
    conf = cfg.ConfigOpts()
    oslo_url = "rabbit://" + url.split("://", 1)[1].rstrip("/") + "/"
    transport = oslo_messaging.get_notification_transport(conf, url=oslo_url)
    conf.set_override("amqp_durable_queues", True, group="oslo_messaging_rabbit")
    topic = names()["rabbit_notification_topic"]
    notifier = oslo_messaging.Notifier(
        transport, publisher_id="bench", driver="messagingv2", topics=[topic]
    )
    notifier.info({}, "image.send", PAYLOAD)  # connect and declare outside the timing
    started = time.perf_counter()
    for _ in range(n):
        notifier.info({}, "image.send", PAYLOAD)
    rate = n / (time.perf_counter() - started)
    transport.cleanup()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing broker (default: start a private node)")
    parser.add_argument("--emits", type=int, default=20000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--baseline-messages", type=int, default=3000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    node = None
    url = args.url
    if url is None:
        from tests.support.rabbitmq import RabbitNode, ensure_installed

        ensure_installed()
        node = RabbitNode().start()
        url = node.url
    try:
        print(f"emit() latency, {args.emits} emits each:")
        for label, samples in bench_latency(node, url, args.emits).items():
            print(f"  {label:16} {percentiles(samples)}")
        print("throughput, confirms + durable queues + persistent messages:")
        ours = bench_ours(url, args.messages)
        raw = bench_raw_kombu(url, args.baseline_messages)
        oslo = bench_oslo(url, args.baseline_messages)
        print(f"  rabbit strategy            {ours:9.0f} msg/s")
        print(f"  kombu publish + confirm    {raw:9.0f} msg/s   ratio {ours / raw:5.1f}x")
        if oslo is None:
            print("  oslo.messaging messagingv2  not installed")
        else:
            print(f"  oslo.messaging messagingv2 {oslo:9.0f} msg/s   ratio {ours / oslo:5.1f}x")
    finally:
        if node is not None:
            node.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
