"""Waiting in tests: for a condition, and at a steady pace."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


def wait_until(condition: Callable[[], Any], timeout: float, pause: float = 0.01) -> None:
    """Return once *condition()* is true; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(pause)


def paced_emit(strategy: Any, notifications: Iterable[Any], per_second: int) -> None:
    """``strategy.emit()`` each notification, no faster than *per_second* on average."""
    started = time.monotonic()
    for index, notification in enumerate(notifications):
        strategy.emit(notification)
        if index % 50 == 0:
            ahead = started + index / per_second - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
