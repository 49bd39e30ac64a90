"""Where the worker takes its batches from: this engine's journal, adopted ones, memory.

Decisions:

* **The journal is the queue** (``outbox_path``, :mod:`._outbox`): emit() wrote the
  record; the worker reads batches back in order from disk, so a backlog of any size
  costs no memory, and acknowledges a batch's end position only after the broker
  confirmed it. Order of service: own journal, then adopted journals (oldest first),
  then memory (notifications the journal could not take).
* **A journal that fails is retried, not dropped**: while appends are refused (disk
  full, read-only, deleted) emit() keeps notifications in memory (bounded by
  ``queue_size``, counted ``unkept``); every second the worker tries a fresh segment
  (a fresh journal if its files were deleted, rewriting what they still held) and
  moves what waits in memory to it. Errors are logged, rate-limited.
* **Damaged records** (torn, corrupt) are skipped, logged and counted (``damaged``,
  and ``expired`` as dropped): nothing after them waits.
* Own and adopted notifications are counted apart (:meth:`Spool.release`), so that
  ``flush()`` is never satisfied by journals adopted after it was called.

Used by the worker thread only; other threads read :meth:`Spool.counts`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from .._ratelimit import RateLimitedLog
from ..events import Notification
from ._adoption import Adopted, adoptable
from ._intake import Intake
from ._outbox import Outbox, decode, encode
from ._publisher import Batch
from ._segments import Cursor, Position

__all__ = ["ADOPTED", "OWN", "UNREADABLE", "Spool"]

log = logging.getLogger("instrument.delivery")

_ADOPT_INTERVAL: Final = 5.0
_RESUME_INTERVAL: Final = 1.0
_ABSORB_CHUNK: Final = 1000
OWN: Final = 0  # batch tag of a record of this engine's journal (None: memory only)
ADOPTED: Final = 1  # batch tag of a record of an adopted journal

UNREADABLE: Final = Notification("", "", "", "", "", None)  # stands in for a damaged record


class Spool:
    """Journals and the memory intake; batches to publish come from here."""

    def __init__(
        self, intake: Intake, outbox: Outbox | None, name: str, fsync_interval: float
    ) -> None:
        self.name = name
        self._intake = intake
        self._outbox = outbox
        self._fsync_interval = fsync_interval
        self._adopted: list[Adopted] = []
        self._pending: tuple[Cursor, Position] | None = None  # acked when a batch is done
        self._next_adopt = self._next_sync = self._next_resume = 0.0
        self._log = RateLimitedLog(log)
        self._n = dict.fromkeys(("adopted", "own_done", "adopted_done", "damaged"), 0)
        self.superseded = False  # the batch in flight was rewritten to a new journal
        self._lost = 0  # records a deleted journal took with it, not yet counted expired

    @property
    def has_outbox(self) -> bool:
        return self._outbox is not None

    def journaled(self) -> int:
        """Notifications emit() wrote to the journal (moved from memory not included)."""
        return 0 if self._outbox is None else self._outbox.appended

    def counts(self) -> dict[str, Any]:
        """``adopted``, ``stored`` (journaled), ``outbox`` (on disk, not confirmed), ``damaged``."""
        n, outbox = self._n, self._outbox
        stored = 0 if outbox is None else outbox.appended + outbox.absorbed
        on_disk = stored - n["own_done"] + n["adopted"] - n["adopted_done"]
        return {
            "adopted": n["adopted"],
            "stored": stored,
            "outbox": on_disk,
            "damaged": n["damaged"],
            "outbox_error": None if outbox is None else outbox.error,
        }

    def open(self) -> None:
        """At worker start: a journal the request path could not open is retried."""
        self.maintain()

    def maintain(self) -> None:
        """Fsync, rotate, notice deletion, retry a refused journal, adopt (each on its clock)."""
        outbox, now = self._outbox, time.monotonic()
        if outbox is None:
            return
        try:
            if now >= self._next_sync:
                self._next_sync = now + self._fsync_interval
                if outbox.check():
                    outbox.sync()
            if now >= self._next_resume:
                self._renew(outbox)
        except OSError as exc:
            self._next_resume = now + _RESUME_INTERVAL
            outbox.error = str(exc)
            self._log.log("outbox", logging.ERROR, "%s: outbox %s: %s", self.name, outbox.root, exc)
        self.absorb()
        self._maybe_adopt(now)

    def _renew(self, outbox: Outbox) -> None:
        """Allocate the next segment; a refused journal gets one (a new journal if deleted)."""
        refused = not outbox.writable
        if refused and (outbox.cursor is None or not outbox.intact()):
            self._resume(outbox)
        outbox.prepare()
        if refused and outbox.writable:
            log.warning("%s: the outbox %s takes notifications again", self.name, outbox.root)

    def _resume(self, outbox: Outbox) -> None:
        """A new journal; the batch in flight from the deleted one is superseded: its
        records are rewritten too, and sent, confirmed and counted from the new one."""
        old = outbox.cursor
        if self._pending is not None and self._pending[0] is old and old is not None:
            self._pending, self.superseded = None, True
        lost = outbox.resume()
        if lost:
            self._n["damaged"] += lost
            self._lost += lost  # expired at the next take(), as damaged records are
            log.error(
                "%s: %d notifications of the deleted journal were lost with its files",
                self.name,
                lost,
            )

    def absorb(self) -> None:
        """Move what waits in memory (the journal refused it) to the journal."""
        outbox = self._outbox
        while outbox is not None and outbox.writable and self._intake:
            chunk = self._intake.take(_ABSORB_CHUNK)
            for index, notification in enumerate(chunk):
                if not outbox.take_over(encode(notification), absorbed=True):
                    self._intake.put_back(chunk[index:])
                    return

    def _maybe_adopt(self, now: float) -> None:
        outbox = self._outbox
        if outbox is None or now < self._next_adopt:
            return
        self._next_adopt = now + _ADOPT_INTERVAL
        try:
            found = adoptable(outbox.root, outbox.channel, {outbox.directory})
        except OSError as exc:
            self._log.log("adopt", logging.WARNING, "%s: cannot adopt: %s", self.name, exc)
            return
        for journal in found:
            log.info(
                "%s: adopted %d notifications from %s",
                self.name,
                journal.pending,
                journal.directory,
            )
            self._n["adopted"] += journal.pending
        self._adopted += found

    def take(self, limit: int, unreadable: Callable[[Batch], None]) -> Batch:
        """The next batch: own journal, adopted journals, then memory."""
        if self._lost:
            lost, self._lost = self._lost, 0
            unreadable([(OWN, UNREADABLE)] * lost)
        outbox = self._outbox
        if outbox is not None and outbox.cursor is not None:
            batch = self._read(outbox.cursor, OWN, limit, unreadable)
            if batch:
                return batch
        while self._adopted:
            journal = self._adopted[0]
            batch = self._read(journal.cursor, ADOPTED, limit, unreadable)
            if batch:
                return batch
            if not journal.cursor.exhausted:
                break
            self._adopted.pop(0).finish()
        return [(None, notification) for notification in self._intake.take(limit)]

    def _read(
        self, cursor: Cursor, tag: int, limit: int, unreadable: Callable[[Batch], None]
    ) -> Batch:
        try:
            records, end = cursor.read(limit)
        except OSError as exc:
            self._log.log("read", logging.ERROR, "%s: cannot read the outbox: %s", self.name, exc)
            return []
        batch: Batch = [(tag, note) for note in map(decode, records) if note is not None]
        damaged = len(records) - len(batch)
        if not batch and records:
            self._ack(cursor, end)
        if damaged:
            self._n["damaged"] += damaged
            self._log.log(
                "damaged",
                logging.ERROR,
                "%s: %d damaged records in %s skipped (lost)",
                self.name,
                damaged,
                cursor.directory,
            )
            unreadable([(tag, UNREADABLE)] * damaged)
        if batch:
            self._pending = (cursor, end)
        return batch

    def release(self, batch: Batch) -> int:
        """*batch* is done with (confirmed or given up): acknowledge it; how many were own."""
        adopted = sum(1 for tag, _ in batch if tag == ADOPTED)
        self._n["adopted_done"] += adopted
        self._n["own_done"] += sum(1 for tag, _ in batch if tag == OWN)
        if self._pending is not None and batch and batch[0][1] is not UNREADABLE:
            self._ack(*self._pending)
            self._pending = None
        return len(batch) - adopted

    def _ack(self, cursor: Cursor, end: Position) -> None:
        try:
            cursor.ack(end)
        except OSError as exc:  # sent again by the next process: duplicates, not losses
            self._log.log("ack", logging.ERROR, "%s: cannot record a confirm: %s", self.name, exc)

    def close(self) -> None:
        """Close the journals (never raises); what is not confirmed stays for the next engine."""
        for journal in self._adopted:
            journal.release()
        self._adopted = []
        if self._outbox is not None:
            try:
                self._outbox.close(confirmed=self._n["own_done"])
            except OSError as exc:
                log.warning("%s: closing the outbox failed: %s", self.name, exc)

    def abandon(self) -> None:
        """In a forked child: close the inherited descriptors, use none of them again."""
        for journal in self._adopted:
            journal.release()
        if self._outbox is not None:
            self._outbox.abandon()
