"""qpid strategy throughput against one private RabbitMQ node, figures and ratios in one run.

Sustained delivery (emit N notifications, then wait until the broker settled all of
them), messages durable, same payload everywhere:

* the qpid strategy (AMQP 1.0, credit, one settlement wait per batch);
* a blocking proton sender (``BlockingConnection``, ``BlockingSender.send`` waits for
  each settlement): what a naive AMQP 1.0 notifier does (goal: qpid >= 5x it);
* the rabbit strategy (AMQP 0-9-1, pipelined publisher confirms) on the same broker.

Usage::

    python benchmarks/bench_qpid.py [--count 20000] [--blocking-count 3000] [--rounds 3]

It starts its own node through tests/support/rabbitmq.py. Timed assertions never live
in tests/; this script only reports.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proton import Message
from proton.utils import BlockingConnection

from instrument.events import Notification
from instrument.strategies.qpid import QpidStrategy
from instrument.strategies.rabbit import RabbitStrategy
from tests.support.rabbitmq import running_node

PAYLOAD = {"image_id": str(uuid.uuid4()), "owner_id": "tenant", "bytes_sent": 13287936}


def notes(count: int) -> list[Notification]:
    return [Notification.create("image.send", "INFO", dict(PAYLOAD)) for _ in range(count)]


def strategy_rate(strategy: Any, count: int) -> float:
    """Notifications per second from the first emit to the last settlement."""
    strategy.check(10)  # connect (and declare) before timing, as a running service would
    batch = notes(count)
    started = time.perf_counter()
    for note in batch:
        strategy.emit(note)
    if not strategy.flush(120):
        raise SystemExit(f"{strategy!r} did not deliver {count} in time: {strategy.stats()}")
    elapsed = time.perf_counter() - started
    strategy.close()
    return count / elapsed


def blocking_rate(url: str, exchange: str, topic: str, count: int) -> float:
    connection = BlockingConnection(url, timeout=10)
    try:
        sender = connection.create_sender(f"/exchange/{exchange}")
        batch = notes(count)
        started = time.perf_counter()
        for note in batch:
            message = Message(
                body=note.to_json().encode(),
                inferred=True,
                subject=f"{topic}.info",
                content_type="application/json",
                durable=True,
                id=note.message_id,
            )
            sender.send(message)  # waits for the broker's settlement
        return count / (time.perf_counter() - started)
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--blocking-count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs, best taken")
    args = parser.parse_args(argv)
    best = {"qpid": 0.0, "blocking": 0.0, "rabbit": 0.0}
    with running_node() as node:
        print(f"RabbitMQ node {node.nodename} (AMQP 1.0 plugin on port {node.port})")
        for _ in range(args.rounds):
            for name, rate in one_round(node, args).items():
                best[name] = max(best[name], rate)
    qpid, blocking, rabbit = best["qpid"], best["blocking"], best["rabbit"]
    print(f"best of {args.rounds} interleaved rounds")
    print(f"qpid strategy            {qpid:10,.0f} msg/s  ({args.count} notifications)")
    print(f"blocking proton sender   {blocking:10,.0f} msg/s  ({args.blocking_count} messages)")
    print(f"rabbit strategy          {rabbit:10,.0f} msg/s  ({args.count} notifications)")
    print(f"qpid / blocking proton   {qpid / blocking:10.1f} x  (goal >= 5)")
    print(f"qpid / rabbit            {qpid / rabbit:10.2f} x")
    return 0


def one_round(node: Any, args: argparse.Namespace) -> dict[str, float]:
    """One rate of each sender, on fresh names (no queue left over from a round before)."""
    tag = uuid.uuid4().hex[:8]
    qpid_names = {"qpid_notification_exchange": f"b-{tag}", "qpid_notification_topic": f"q-{tag}"}
    rabbit_names = {
        "rabbit_notification_exchange": f"r-{tag}",
        "rabbit_notification_topic": f"r-{tag}",
    }
    room = {"queue_size": args.count}  # measure delivery, not the overflow policy
    port = {"qpid_hostname": "127.0.0.1", "qpid_port": node.port}
    return {
        "qpid": strategy_rate(QpidStrategy(**port, **room, **qpid_names), args.count),
        "blocking": blocking_rate(node.amqp1_url, f"b-{tag}", f"q-{tag}", args.blocking_count),
        "rabbit": strategy_rate(
            RabbitStrategy(transport_url=node.url, **room, **rabbit_names), args.count
        ),
    }


if __name__ == "__main__":
    raise SystemExit(main())
