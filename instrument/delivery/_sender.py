"""One publisher, its connection, and the retry schedule of the batch in flight.

Decisions:

* **A failed batch is retried as it was**, after an exponential backoff
  (``<prefix>_retry_backoff`` doubling up to ``<prefix>_retry_max_backoff``). With
  ``<prefix>_max_retries = 0`` (Glance's default) it is retried forever; with N it is
  dropped after N failed attempts, logged and counted (``expired``), never silently.
  Retrying the batch unchanged makes ``<prefix>_max_retries`` count attempts per
  notification exactly.
* Repeated failures are logged at most once a minute per kind of error: the text of
  an error varies (hosts, counts), so it is not the key.
* **Fork**: a publisher inherited by a forked child shares the parent's socket; the
  child never closes it, nor lets the garbage collector do so (:meth:`Sender.abandon`).

Used by the worker thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from .._ratelimit import RateLimitedLog
from ._publisher import Batch, Publisher

__all__ = ["Sender"]

log = logging.getLogger("instrument.delivery")

_MIN_BACKOFF: Final = 0.01

# Publishers inherited over fork: they share the parent's sockets, so the child never
# closes them (or lets the garbage collector do so).
_abandoned: list[object] = []


class Sender:
    """Publishes batches through a lazily made :class:`Publisher`; keeps the retry schedule."""

    def __init__(
        self,
        publisher_factory: Callable[[], Publisher],
        *,
        name: str,
        max_retries: int,
        retry_backoff: float,
        retry_max_backoff: float,
    ) -> None:
        self.name = name
        self._factory = publisher_factory
        self._max_retries = max_retries
        self._initial_backoff = max(retry_backoff, _MIN_BACKOFF)
        self._max_backoff = max(retry_max_backoff, self._initial_backoff)
        self._backoff = self._initial_backoff
        self._publisher: Publisher | None = None
        self.connected = False
        self.attempts = 0
        self.retry_at = 0.0  # time.monotonic() before which the failed batch waits
        self.last_error: str | None = None
        self._failure_log = RateLimitedLog(log)

    def send(self, batch: Batch) -> None:
        """Connect if needed and publish *batch*; raise when the broker did not confirm it."""
        if self._publisher is None:
            self._publisher = self._factory()
        if not self.connected:
            self._publisher.connect()
            self.connected = True
        self._publisher.publish_batch([notification for _, notification in batch])

    def succeeded(self) -> None:
        """The batch was confirmed: the next one starts a fresh schedule."""
        if self.attempts:
            log.info("%s: delivering again after %d failed attempts", self.name, self.attempts)
        self.attempts = 0
        self._backoff = self._initial_backoff
        self.retry_at = 0.0

    def failed(self, batch: Batch, exc: Exception) -> bool:
        """Record a failed attempt at *batch*; True when it is to be dropped (logged here)."""
        self.disconnect()
        self.last_error = str(exc) or type(exc).__name__
        self.attempts += 1
        self.retry_at = time.monotonic() + self._backoff
        exhausted = bool(self._max_retries) and self.attempts >= self._max_retries
        if exhausted:
            self._log_give_up(batch)
            self.attempts = 0
        else:
            self._failure_log.log(
                f"fail:{type(exc).__name__}",  # the text varies (hosts, counts): not a key
                logging.WARNING,
                "%s: cannot deliver %d notifications (attempt %d, retrying in %.2f s): %s",
                self.name,
                len(batch),
                self.attempts,
                self._backoff,
                self.last_error,
            )
        self._backoff = min(self._backoff * 2, self._max_backoff)
        return exhausted

    def _log_give_up(self, batch: Batch) -> None:
        log.error(
            "%s: dropping %d notifications after %d failed attempts (the %s strategy's "
            "retry limit): %s; message ids %s",
            self.name,
            len(batch),
            self.attempts,
            self.name,
            self.last_error,
            ", ".join(notification.message_id for _, notification in batch[:5])
            + (", ..." if len(batch) > 5 else ""),
        )

    def keep_alive(self) -> None:
        """While idle and connected: let the publisher send heartbeats; disconnect on error."""
        if not self.connected or self._publisher is None:
            return
        try:
            self._publisher.idle()
        except Exception as exc:
            self.last_error = str(exc)
            self.disconnect()

    def disconnect(self) -> None:
        """Close the connection (never raises); the next :meth:`send` makes a new one."""
        self.connected = False
        if self._publisher is not None:
            try:
                self._publisher.close()
            except Exception:
                log.debug("%s: publisher close failed", self.name, exc_info=True)

    def abandon(self) -> None:
        """In a forked child: never touch the inherited publisher again."""
        _abandoned.append(self._publisher)
        self._publisher = None
