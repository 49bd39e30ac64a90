"""The ``memory`` strategy: keeps notifications in the process. What tests use."""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING

from ..options import Option, integer
from .base import Strategy

if TYPE_CHECKING:
    from ..events import Notification

__all__ = ["MemoryStrategy"]


class MemoryStrategy(Strategy):
    """Append each notification to a list, oldest first; thread-safe.

    ``memory_max`` bounds the list (oldest dropped first, and counted); 0 means no bound.
    """

    name = "memory"
    options = (
        Option(
            "memory_max",
            0,
            "memory strategy: keep at most this many notifications (0: no limit).",
            integer(minimum=0),
        ),
    )

    def __init__(self, memory_max: int = 0) -> None:
        self.memory_max = memory_max
        # A bounded deque drops the oldest itself, without moving the others.
        self._items: collections.deque[Notification] = collections.deque(maxlen=memory_max or None)
        self._dropped = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiters = 0  # emit() wakes no one when no one waits: it runs per request

    def emit(self, notification: Notification) -> None:
        with self._lock:
            if len(self._items) == self._items.maxlen:
                self._dropped += 1  # the append below pushes the oldest out
            self._items.append(notification)
            if self._waiters:
                self._changed.notify_all()

    @property
    def notifications(self) -> list[Notification]:
        """A copy of what was received, oldest first."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least *count* notifications are held; False on timeout."""
        with self._lock:
            self._waiters += 1
            try:
                return self._changed.wait_for(lambda: len(self._items) >= count, timeout)
            finally:
                self._waiters -= 1

    def stats(self) -> dict[str, int]:
        return {"dropped": self._dropped} if self._dropped else {}
