"""The options every broker strategy takes for its delivery engine."""

from __future__ import annotations

from typing import Final

from ..options import Option, integer, number, string

__all__ = ["DELIVERY_OPTIONS", "retry_options"]

DELIVERY_OPTIONS: Final = (
    Option(
        "queue_size",
        10000,
        "Broker strategies: notifications kept in memory while the broker is slow or down; "
        "beyond it the newest is dropped and counted as overflow.",
        integer(1),
    ),
    Option(
        "batch_size",
        200,
        "Broker strategies: notifications published per batch (one confirm round trip).",
        integer(1, 100000),
    ),
    Option(
        "outbox_path",
        None,
        "Broker strategies: directory of the journals keeping notifications until the "
        "broker confirmed them, across outages and crashes of the process (unset: memory "
        "only).",
        string,
    ),
    Option(
        "outbox_fsync_interval",
        1.0,
        "Broker strategies: seconds between two fsyncs of the outbox journal, the most a "
        "host crash (not a process crash) can lose.",
        number(0.001),
    ),
    Option(
        "close_timeout",
        5.0,
        "Broker strategies: seconds close() and interpreter exit wait for pending "
        "notifications to be confirmed.",
        number(0),
    ),
)


def retry_options(prefix: str) -> tuple[Option, ...]:
    """The retry options of a broker strategy, named as Glance named them for *prefix*."""
    return (
        Option(
            f"{prefix}_max_retries",
            0,
            f"{prefix} strategy: attempts per batch before its notifications are dropped "
            "(logged and counted); 0 retries forever.",
            integer(0),
        ),
        Option(
            f"{prefix}_retry_backoff",
            2.0,
            f"{prefix} strategy: seconds to wait after the first failed attempt; doubled "
            "after each further failure.",
            number(0),
        ),
        Option(
            f"{prefix}_retry_max_backoff",
            30.0,
            f"{prefix} strategy: the longest wait between two attempts, in seconds.",
            number(0),
        ),
    )
