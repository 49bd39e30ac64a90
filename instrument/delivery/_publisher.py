"""The broker side of delivery, as the engine sees it: a leaf, importing nothing of the engine.

A :class:`Publisher` returns from :meth:`~Publisher.publish_batch` only once the broker
confirmed the whole batch; the worker retries a failed batch as it was. A broker that
settled part of a batch for good says so with :class:`PartialDelivery`: the worker then
counts what it accepted as sent and what it refused for good as dropped (logged), and
retries only the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..events import Notification
from ..exceptions import DeliveryError

__all__ = ["Batch", "PartialDelivery", "Publisher"]

# A batch in flight: (outbox row id, or None when it is in memory only, notification).
Batch = list[tuple[int | None, Notification]]


class PartialDelivery(DeliveryError):
    """The broker accepted the notifications of a batch at *accepted* and refused those at
    *rejected* for good (indexes into the batch); the others are to be sent again."""

    def __init__(self, message: str, accepted: Sequence[int], rejected: Sequence[int]) -> None:
        super().__init__(message)
        self.accepted = tuple(accepted)
        self.rejected = tuple(rejected)


class Publisher(Protocol):
    """The broker side of delivery. Used by the worker thread only.

    Errors raised should be :class:`~instrument.exceptions.StrategyError` with a message
    that is safe to log (no passwords) and says what is wrong.
    """

    def connect(self) -> None:
        """Connect (and declare what is needed); raise if the broker cannot be reached."""

    def publish_batch(self, batch: Sequence[Notification]) -> None:
        """Return only after the broker confirmed every notification of *batch*, or raise
        (:class:`PartialDelivery` when it settled some of them for good)."""

    def idle(self) -> None:
        """Called about once a second while connected and idle (heartbeats); may raise."""

    def close(self) -> None:
        """Drop the connection; the next :meth:`connect` makes a new one. Never raises."""
