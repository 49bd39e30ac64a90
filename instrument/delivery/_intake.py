"""The memory queue between :meth:`Delivery.submit` and the worker, with one owner.

The engine appends (request threads), the worker takes (its own thread). Both need a
consistent count of what was accepted, and a way to settle a ``submit()`` that raced
with ``close()``; this object owns the deque and the lock for all of it.

``append`` takes no lock: the request path never waits, whatever the worker does.
Everything that moves items out (``take``, ``put_back``, ``take_back``) runs under one
lock, so ``taken + len(queue)`` (:meth:`Intake.accepted`) is always a consistent sum.

The intake is *sealed* (under that lock) when the worker has taken its last look at
it: only from then on may a ``submit()`` racing with ``close()`` take its notification
back (:meth:`Intake.take_back`).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from ..events import Notification

__all__ = ["Intake"]


class Intake:
    """A deque of notifications: appended to lock-free, taken from under a lock."""

    def __init__(self) -> None:
        self._queue: collections.deque[Notification] = collections.deque()
        self._lock = threading.Lock()
        self._taken = 0
        self._sealed = False
        self.taken_back = 0  # accepted while close() ran, taken back (counted abandoned)
        # The request path: the deque's own method, no lock and no extra call.
        self.append: Callable[[Notification], None] = self._queue.append

    def __len__(self) -> int:
        return len(self._queue)

    def accepted(self) -> int:
        """How many notifications were appended so far (taken or still waiting)."""
        with self._lock:
            return self._taken + len(self._queue)

    def take(self, limit: int) -> list[Notification]:
        """Remove and return the oldest *limit* notifications (fewer if fewer wait)."""
        with self._lock:
            chunk = [self._queue.popleft() for _ in range(min(len(self._queue), limit))]
            self._taken += len(chunk)
        return chunk

    def put_back(self, chunk: list[Notification]) -> None:
        """Undo :meth:`take` of *chunk*: it goes back in front, in its order."""
        with self._lock:
            self._queue.extendleft(reversed(chunk))
            self._taken -= len(chunk)

    def seal(self) -> None:
        """The worker's last look at the queue is now: from here on, :meth:`take_back` may."""
        with self._lock:
            self._sealed = True

    def take_back(self, notification: Notification, *, worker_started: bool) -> bool:
        """After a ``submit()`` raced with ``close()``: remove *notification* if the worker
        will never see it; True when it was removed (and counted in :attr:`taken_back`).

        Until a started worker has sealed the intake it still sends, stores or counts
        what is queued, and close()'s flush may already be waiting for this one: taking
        it back then would make close() wait its whole timeout for a notification that
        nobody sends. A worker that never started never will: what it would have found
        is taken back in any case.
        """
        with self._lock:
            if worker_started and not self._sealed:
                return False
            try:
                self._queue.remove(notification)
            except ValueError:  # the worker has it: it sends, stores or counts it
                return False
            self.taken_back += 1
            return True
