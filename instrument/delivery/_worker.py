"""The worker behind :class:`instrument.delivery.Delivery`: one thread, one publisher.

Decisions:

* **One daemon worker per engine and process** (a greenlet under eventlet/gevent
  monkey-patching: only :mod:`threading` primitives are used) publishes batches of up
  to ``batch_size`` through a :class:`~._publisher.Publisher` (:mod:`._sender`), which
  returns only once the broker confirmed the whole batch.
* Everything that can block (the broker, fsync) happens here, never in ``submit()``
  (which at most appends one record to the journal, :mod:`._outbox`). The loop, once
  per step: look after the journal (fsync, rotation, recovery, adoption of dead
  processes' journals, each on its own clock), take a batch (the one that failed last
  time, else the oldest waiting, :mod:`._spool`), wait out a backoff, publish.
* Only this thread reads, syncs and rotates the journal and touches the publisher;
  other threads append to the journal, read counters and wait on ``_done``.
* ``flush()`` waits for two things separately: this engine's own notifications
  accepted so far, and the rows adopted so far. Rows adopted later are older and sent
  first; they must not make up for own notifications still pending.
* The thread holds ``_busy`` while it works (the journal, the broker) and releases it
  whenever it waits, so :meth:`Worker.pause` (run before ``fork()``) lets a fork happen
  only between two steps, never inside a TLS library (bounded: a step stuck on a
  broker does not hold up the fork for more than a few seconds). The journal holds no
  library state a fork could cut in half: its calls are system calls.
* The thread calls ``on_exit`` as its very last act: until then its engine stays where
  the pre-fork hook looks, also after close() gave up waiting for it.
* The thread seals the intake when it has taken its last look at it: only from then on
  may a submit() racing with close() take its notification back (:mod:`._intake`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ._intake import Intake
from ._outbox import Outbox
from ._publisher import Batch, PartialDelivery, Publisher
from ._sender import Sender
from ._spool import Spool

__all__ = ["Worker"]

log = logging.getLogger("instrument.delivery")

_IDLE_INTERVAL: Final = 1.0  # deep sleep; also how often publisher.idle() runs
_POLL_INTERVAL: Final = 0.01  # while busy: look at the queue this often, unasked
_BUSY_FOR: Final = 1.0  # stay busy this long after the last work
_FORK_PAUSE: Final = 3.0  # longest a fork waits for the current step to end


class Worker:
    """Publishes what :class:`~instrument.delivery.Delivery` queued. See module docstring."""

    def __init__(
        self,
        intake: Intake,
        *,
        publisher_factory: Callable[[], Publisher],
        name: str,
        batch_size: int,
        outbox: Outbox | None,
        fsync_interval: float,
        max_retries: int,
        retry_backoff: float,
        retry_max_backoff: float,
        on_exit: Callable[[], None],
    ) -> None:
        self.name = name
        self._intake = intake
        self._batch_size = batch_size
        self._spool = Spool(intake, outbox, name, fsync_interval)
        self._sender = Sender(
            publisher_factory,
            name=name,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            retry_max_backoff=retry_max_backoff,
        )
        self._inflight: Batch = []
        # Outcomes of the batch in flight that the broker settled for good, by index
        # ("sent", "expired"): only the rest is sent again (PartialDelivery).
        self._settled: dict[int, str] = {}
        self._next_idle_call = 0.0
        self._last_work = 0.0
        self._wake = threading.Event()
        self._sleeping = False
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._ready = threading.Event()
        self._counts = dict.fromkeys(("sent", "expired", "abandoned", "retried", "failures"), 0)
        self._own_done = 0  # of sent + expired: notifications this engine accepted
        self._busy = threading.Lock()  # held by the thread while it works (see pause())
        self._on_exit = on_exit
        self._thread = threading.Thread(target=self._run, name=f"instrument-{name}", daemon=True)

    # ------------------------------------------------------------ other threads

    def start(self) -> None:
        """Start the thread (once)."""
        self._thread.start()

    def pause(self) -> bool:
        """Before ``fork()``: wait (bounded) until the thread is between two steps.

        True when paused; then :meth:`resume` must follow (in the parent).
        """
        if not self._thread.is_alive() or threading.current_thread() is self._thread:
            return False
        return self._busy.acquire(timeout=_FORK_PAUSE)

    def resume(self) -> None:
        """After a :meth:`pause` that returned True: the thread goes on."""
        self._busy.release()

    def wake(self) -> None:
        """After an append: wake the worker if it waits for work (cheap otherwise).

        The worker sets ``_sleeping`` before it looks at the queue, submit() appends
        before it looks at ``_sleeping``: one of the two always sees the other.
        """
        if self._sleeping and not self._wake.is_set():
            self._wake.set()

    def accepted(self) -> int:
        """How many notifications submit() accepted so far (journaled, or in memory)."""
        return self._intake.accepted() + self._spool.journaled()

    def wait_finished(self, timeout: float | None) -> bool:
        """Wait until what was accepted, and what was adopted, so far is confirmed or dropped.

        The two are counted apart: rows adopted after this call must not count for own
        notifications still pending.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._ready.wait(timeout):  # rows found at start-up count too
            return False
        own_target = self.accepted()
        adopted_target = self._spool.counts()["adopted"]
        self._wake.set()
        with self._done:
            while not self._finished(own_target, adopted_target):
                if not self._thread.is_alive():
                    return False
                remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._done.wait(remaining)
        return True

    def _finished(self, own_target: int, adopted_target: int) -> bool:
        done = self._counts["sent"] + self._counts["expired"]
        own = self._own_done
        return own >= own_target and done - own >= adopted_target

    def stop(self, join_timeout: float) -> tuple[int, bool]:
        """Stop the thread: ``(abandoned, still_busy)``.

        ``abandoned`` counts what is lost (memory only). When the thread is still busy
        with the broker after *join_timeout*, it is ``(pending, True)``: those
        notifications are not lost yet; the thread finishes its attempt in the
        background and then counts what it could not send as abandoned.
        """
        self._stop.set()
        self._wake.set()
        if not self._thread.is_alive() and self._thread.ident is None:  # never started
            self._intake.seal()  # Delivery.close() made sure it never will
            self._spool.close()
            return 0, False
        if self._thread.is_alive():
            self._thread.join(join_timeout)
        if self._thread.is_alive():
            return len(self._intake) + self._memory_inflight(), True
        return self._counts["abandoned"], False

    def abandon(self) -> None:
        """In a forked child: never touch this worker's publisher or outbox again."""
        self._sender.abandon()
        self._spool.abandon()

    def stats(self) -> dict[str, Any]:
        """The worker's counters, ``connected`` and ``last_error``."""
        counts: dict[str, Any] = {**self._counts, **self._spool.counts()}
        counts["connected"] = self._sender.connected
        counts["last_error"] = self._sender.last_error
        return counts

    # ------------------------------------------------------------ worker thread

    def _run(self) -> None:
        try:
            with self._busy:
                self._spool.open()
        finally:
            self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    with self._busy:
                        self._step()
                except Exception:  # a bug here must not end delivery for good
                    log.exception("%s: delivery worker error", self.name)
                    self._stop.wait(_IDLE_INTERVAL)
        finally:
            try:
                with self._busy:
                    self._finish()
            finally:
                self._on_exit()  # last: a fork until here still pauses this thread

    def _step(self) -> None:
        self._spool.maintain()
        if self._spool.superseded:  # its records are in the new journal: sent from there
            self._spool.superseded = False
            self._inflight, self._settled = [], {}
        if not self._inflight:
            self._inflight = self._spool.take(self._batch_size, self._expire)
        if not self._inflight:
            self._idle()
            return
        self._last_work = time.monotonic()
        delay = self._sender.retry_at - time.monotonic()
        if delay > 0:
            self._sleep(delay)
            return
        self._attempt()

    def _idle(self) -> None:
        now = time.monotonic()
        if self._sender.connected and now >= self._next_idle_call:
            self._next_idle_call = now + _IDLE_INTERVAL
            self._sender.keep_alive()
        if now - self._last_work < _BUSY_FOR:
            self._wait(_POLL_INTERVAL, wakeable=False)
        else:
            self._wait(_IDLE_INTERVAL, wakeable=True)

    def _sleep(self, delay: float) -> None:
        if not self._spool.has_outbox:  # nothing to do until the backoff ends
            self._busy.release()  # waiting: a fork may happen now
            try:
                self._stop.wait(delay)
            finally:
                self._busy.acquire()
        else:  # new notifications still go to disk within a poll interval
            self._wait(min(delay, _POLL_INTERVAL), wakeable=False)

    def _wait(self, timeout: float, *, wakeable: bool) -> None:
        """Wait for *timeout*; with *wakeable*, submit() may cut it short.

        Busy, the worker polls and submit() never pays for waking a thread (a futex
        wake-up is most of an emit's cost); idle, the first submit() wakes it.
        flush() and stop() always wake it.
        """
        self._sleeping = wakeable
        self._busy.release()  # waiting: a fork may happen now
        try:
            if not (wakeable and self._intake):
                self._wake.wait(timeout)
        finally:
            self._busy.acquire()
        self._sleeping = False
        self._wake.clear()

    def _attempt(self) -> None:
        batch = self._inflight
        todo = [index for index in range(len(batch)) if index not in self._settled]
        try:
            self._sender.send([batch[index] for index in todo])
        except PartialDelivery as exc:
            self._settle(todo, exc)
            if len(self._settled) < len(batch):
                self._failed(exc)
            else:  # nothing left to send again
                self._sender.succeeded()
                self._done_with_inflight()
        except Exception as exc:
            self._failed(exc)
        else:
            self._settled.update(dict.fromkeys(todo, "sent"))
            self._sender.succeeded()
            self._done_with_inflight()

    def _settle(self, sent: list[int], partial: PartialDelivery) -> None:
        """Note what the broker settled for good of the notifications *sent* (indexes into
        the batch in flight); those it refused for good are dropped, logged."""
        self._settled.update({sent[i]: "sent" for i in partial.accepted})
        self._settled.update({sent[i]: "expired" for i in partial.rejected})
        if partial.rejected:
            ids = [self._inflight[sent[i]][1].message_id for i in partial.rejected]
            log.error(
                "%s: the broker refused %d notifications for good, dropped: %s; message ids %s",
                self.name,
                len(ids),
                partial,
                ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else ""),
            )

    def _failed(self, exc: Exception) -> None:
        """The attempt failed: retry what is not settled, or drop it (retries exhausted)."""
        self._counts["failures"] += 1
        remaining = [index for index in range(len(self._inflight)) if index not in self._settled]
        if self._sender.failed([self._inflight[index] for index in remaining], exc):
            self._settled.update(dict.fromkeys(remaining, "expired"))
            self._done_with_inflight()
        else:
            self._counts["retried"] += len(remaining)

    def _expire(self, batch: Batch) -> None:
        """Drop *batch* for good (unreadable records), counted ``expired``."""
        self._done_with(batch, {"expired": len(batch)})

    def _done_with_inflight(self) -> None:
        """The batch in flight is settled, all of it: count each outcome, forget it."""
        batch, settled = self._inflight, self._settled
        self._inflight, self._settled = [], {}
        outcomes = {"sent": 0, "expired": 0}
        for outcome in settled.values():
            outcomes[outcome] += 1
        self._done_with(batch, outcomes)

    def _done_with(self, batch: Batch, outcomes: dict[str, int]) -> None:
        """Count *batch* by outcome (own and adopted apart) and release it."""
        own = self._spool.release(batch)
        self._own_done += own  # first: flush() may read between the two
        for outcome, count in outcomes.items():
            self._counts[outcome] += count
        self._notify()

    def _notify(self) -> None:
        with self._done:
            self._done.notify_all()

    def _memory_inflight(self) -> int:
        """Notifications in flight that are in memory only and not settled yet."""
        return sum(
            1
            for index, (row_id, _) in enumerate(self._inflight)
            if row_id is None and index not in self._settled
        )

    def _finish(self) -> None:
        """Thread exit: keep what can be kept in the outbox, count the rest, close."""
        self._intake.seal()  # first: what is queued before this is still stored or counted
        self._spool.absorb()
        lost = len(self._intake.take(len(self._intake))) + self._memory_inflight()
        for index, outcome in self._settled.items():  # settled in part, in memory only
            if self._inflight[index][0] is None:
                self._counts[outcome] += 1
                self._own_done += 1
        self._inflight, self._settled = [], {}
        self._counts["abandoned"] += lost
        self._sender.disconnect()
        self._spool.close()
        self._notify()
