"""Helpers for testing an instrumented application.

:func:`capture` collects every notification emitted by any Notifier in the process
while it is active, whatever strategy that Notifier uses::

    from instrument.testing import capture

    with capture() as notifications:
        client.post("/v2/images", json={"name": "cirros"})
    assert notifications.event_types == ["image.create"]

With pytest, the ``notifications`` fixture (installed with the package) does the same
for the whole test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import _capture
from .events import Notification

__all__ = ["CapturedNotifications", "capture"]


class CapturedNotifications(list[Notification]):
    """A list of notifications with a few questions a test asks of it."""

    def __init__(self) -> None:
        super().__init__()
        self._arrived = threading.Condition()

    def append(self, notification: Notification, /) -> None:
        with self._arrived:
            super().append(notification)
            self._arrived.notify_all()

    @property
    def event_types(self) -> list[str]:
        return [n.event_type for n in self]

    @property
    def events(self) -> list[tuple[str, str]]:
        """``(event_type, priority)`` pairs, in order."""
        return [(n.event_type, n.priority) for n in self]

    def of(self, event_type: str) -> list[Notification]:
        return [n for n in self if n.event_type == event_type]

    def payloads(self, event_type: str) -> list[Any]:
        return [n.payload for n in self if n.event_type == event_type]

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until *count* notifications have arrived (from any thread)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self) >= count, timeout)


@contextmanager
def capture() -> Iterator[CapturedNotifications]:
    """Collect the notifications emitted while the block runs."""
    captured = CapturedNotifications()
    _capture.sinks.append(captured)
    try:
        yield captured
    finally:
        # By identity: two captures holding the same notifications (none) are equal.
        for index, sink in enumerate(_capture.sinks):
            if sink is captured:
                del _capture.sinks[index]
                break
