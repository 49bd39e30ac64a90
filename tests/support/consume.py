"""Reading back what a strategy published: Glance's queues, with a plain kombu consumer."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any


def consume(
    url: str,
    topic: str,
    *,
    expect: int,
    timeout: float = 30,
    ssl: Any = None,
    stream: bool = False,
) -> list[dict[str, Any]]:
    """Read ``topic.info|warn|error`` until at least *expect* arrived and 0.3 s passed quietly.

    *stream*: the queues are stream queues, which RabbitMQ serves only to consumers that
    acknowledge, with a prefetch; they are read from their first message.
    """
    import kombu

    got: list[dict[str, Any]] = []

    def on_message(message: Any) -> None:
        got.append(
            {
                "routing_key": message.delivery_info["routing_key"],
                "body": message.body,
                "content_type": message.content_type,
                "delivery_mode": message.properties.get("delivery_mode"),
                "message_id": message.properties.get("message_id"),
            }
        )
        if stream:
            message.ack()

    offset = {"x-stream-offset": "first"} if stream else None
    queues = [
        kombu.Queue(f"{topic}.{p}", no_declare=True, consumer_arguments=offset)
        for p in ("info", "warn", "error")
    ]
    deadline = time.monotonic() + timeout
    with (
        kombu.Connection(url, ssl=ssl) as conn,
        conn.Consumer(queues, on_message=on_message, no_ack=not stream, prefetch_count=2000),
    ):
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            before = len(got)
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.3)
            if len(got) != before:
                quiet_since = time.monotonic()
            elif len(got) >= expect and time.monotonic() - quiet_since > 0.3:
                break
    return got


def ids(messages: list[dict[str, Any]]) -> list[str]:
    """The notifications' message ids, in the order they were read."""
    return [json.loads(m["body"])["message_id"] for m in messages]
