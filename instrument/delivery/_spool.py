"""Where the worker takes its batches from: the memory intake, or the outbox it fills.

Decisions:

* **Optional outbox** (``outbox_path``, :mod:`._outbox`): the worker moves accepted
  notifications to SQLite before publishing (one transaction per chunk) and deletes rows
  only after the broker confirmed them; rows left by a killed process are adopted (at
  start-up, then every few seconds) and delivered.
* **An outbox that fails is dropped, not retried**: delivery goes on in memory only,
  and what the outbox stored becomes adoptable by other engines. A row that cannot be
  read is dropped (logged, counted ``expired``): no process could ever send it.
* Own and adopted notifications are counted apart (:meth:`Spool.release`), so that
  ``flush()`` is never satisfied by rows adopted after it was called.

Used by the worker thread only; other threads read :attr:`Spool.counts`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Final

from ..events import Notification
from ._intake import Intake
from ._outbox import Outbox
from ._publisher import Batch

__all__ = ["UNREADABLE", "Spool"]

log = logging.getLogger("instrument.delivery")

_ADOPT_INTERVAL: Final = 5.0
_ABSORB_CHUNK: Final = 1000

UNREADABLE: Final = Notification("", "", "", "", "", None)  # stands in for a bad row


class Spool:
    """The intake, drained to an optional outbox; batches to publish come from here."""

    def __init__(self, intake: Intake, outbox_path: str | None, name: str) -> None:
        self.name = name
        self._intake = intake
        self._outbox = Outbox(outbox_path, name) if outbox_path else None
        self._next_adopt = 0.0
        self._adopted_ids: set[int] = set()  # adopted rows not confirmed or dropped yet
        self.counts = dict.fromkeys(("adopted", "stored", "outbox"), 0)

    @property
    def has_outbox(self) -> bool:
        """True while an outbox is in use (it is dropped when it fails)."""
        return self._outbox is not None

    def open(self) -> None:
        """Open the outbox, if any; rows left by earlier engines are adopted right after."""
        if self._outbox is None:
            return
        try:
            self._outbox.open()
        except Exception as exc:
            self._outbox_failed("cannot open", exc)

    def absorb(self) -> None:
        """Move what submit() queued to the outbox, in one transaction per chunk."""
        while self._outbox is not None and self._intake:
            chunk = self._intake.take(_ABSORB_CHUNK)
            try:
                self._outbox.add([notification.to_json() for notification in chunk])
            except Exception as exc:
                self._intake.put_back(chunk)
                self._outbox_failed("cannot write to", exc)
                return
            self.counts["stored"] += len(chunk)
            self.counts["outbox"] += len(chunk)

    def maybe_adopt(self) -> None:
        """Every few seconds: take over the outbox rows of dead owners."""
        now = time.monotonic()
        if self._outbox is None or now < self._next_adopt:
            return
        self._next_adopt = now + _ADOPT_INTERVAL
        try:
            adopted = self._outbox.adopt()
        except Exception as exc:
            log.warning("%s: cannot adopt outbox rows of dead processes: %s", self.name, exc)
            return
        if adopted:
            log.info("%s: adopted %d notifications left in the outbox", self.name, len(adopted))
            self._adopted_ids.update(adopted)
            self.counts["adopted"] += len(adopted)
            self.counts["outbox"] += len(adopted)

    def take(self, limit: int, unreadable: Callable[[Batch], None]) -> Batch:
        """The next batch of up to *limit*: from memory, or the oldest rows of the outbox.

        A row that cannot be parsed is logged and passed to *unreadable* (to be counted).
        """
        if self._outbox is None:
            return [(None, notification) for notification in self._intake.take(limit)]
        try:
            rows = self._outbox.load(limit)
        except Exception as exc:
            self._outbox_failed("cannot read", exc)
            return []
        batch: Batch = []
        for row_id, body in rows:
            try:
                batch.append((row_id, Notification.from_dict(json.loads(body))))
            except Exception as exc:  # a row no process can ever send
                log.error("%s: dropping unreadable outbox row %d: %s", self.name, row_id, exc)
                unreadable([(row_id, UNREADABLE)])
        return batch

    def release(self, batch: Batch) -> int:
        """*batch* is done with (confirmed or given up): delete its rows; how many were own."""
        adopted = self._adopted_ids
        own = len(batch)
        if adopted:
            own -= sum(1 for row_id, _ in batch if row_id is not None and row_id in adopted)
            adopted.difference_update(row_id for row_id, _ in batch if row_id is not None)
        ids = [row_id for row_id, _ in batch if row_id is not None]
        if ids and self._outbox is not None:
            self._delete(ids)
        return own

    def _delete(self, ids: list[int]) -> None:
        assert self._outbox is not None
        try:
            self._outbox.delete(ids)
            self.counts["outbox"] -= len(ids)
        except Exception as exc:  # they will be sent again: duplicates, not losses
            log.error(
                "%s: cannot delete %d sent rows from the outbox: %s", self.name, len(ids), exc
            )

    def close(self) -> None:
        """Close the outbox, if any (its rows stay for the next engine); never raises."""
        if self._outbox is not None:
            try:
                self._outbox.close()
            except Exception as exc:
                log.warning("%s: closing the outbox failed: %s", self.name, exc)

    def abandon(self) -> None:
        """In a forked child: never touch the inherited outbox connection again."""
        if self._outbox is not None:
            self._outbox.abandon()

    def _outbox_failed(self, what: str, exc: Exception) -> None:
        log.error(
            "%s: %s the outbox %s (%s); continuing in memory only",
            self.name,
            what,
            self._outbox.path if self._outbox else "",
            exc,
        )
        outbox, self._outbox = self._outbox, None
        if outbox is not None:  # what it stored becomes adoptable by other engines
            try:
                outbox.close()
            except Exception:
                log.debug("%s: closing the failed outbox failed", self.name, exc_info=True)
