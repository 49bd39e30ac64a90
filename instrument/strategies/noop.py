"""The ``noop`` strategy: produces no notifications. The default, as the spec says."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Strategy

if TYPE_CHECKING:
    from ..events import Notification

__all__ = ["NoopStrategy"]


class NoopStrategy(Strategy):
    """Accept every notification and do nothing with it."""

    name = "noop"

    def emit(self, notification: Notification) -> None:
        return None
