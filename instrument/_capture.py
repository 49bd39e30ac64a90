"""The hook behind :func:`instrument.testing.capture`.

Every Notifier hands each notification it emits to the sinks listed here. With no
capture active this costs one truthiness test per notification.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .events import Notification


class Sink(Protocol):
    def append(self, notification: Notification, /) -> None: ...


sinks: list[Sink] = []


def deliver(notification: Notification) -> None:
    for sink in list(sinks):
        sink.append(notification)
