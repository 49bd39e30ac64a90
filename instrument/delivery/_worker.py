"""The worker behind :class:`instrument.delivery.Delivery`: one thread, one publisher.

Everything that can block (the broker, SQLite) happens here, never in ``submit()``.
The loop, once per step: move new notifications to the outbox (if any), adopt rows of
dead processes (every few seconds), take a batch (the one that failed last time, else
the oldest waiting), wait out a backoff, publish. A failed batch is retried unchanged,
so ``<prefix>_max_retries`` counts attempts per notification exactly.

Only this thread touches the publisher and the outbox; other threads read counters
(plain ints, written by this thread only) and wait on ``_done``.

``flush()`` waits for two things separately: this engine's own notifications accepted
so far, and the rows adopted so far. Rows adopted later are older and sent first; they
must not make up for own notifications still pending.

The thread holds ``_busy`` while it works (SQLite, the broker) and releases it whenever
it waits, so :meth:`Worker.pause` (run before ``fork()``) lets a fork happen only
between two steps, never inside SQLite or a TLS library (bounded: a step stuck on a
broker does not hold up the fork for more than a few seconds). When the pause gives
up, the outbox's own lock still keeps the fork out of SQLite (:mod:`instrument.delivery._outbox`).
The thread calls ``on_exit`` as its very last act: until then its engine stays where
the pre-fork hook looks, also after close() gave up waiting for it.

The thread seals the intake when it has taken its last look at it: only from then on
may a submit() racing with close() take its notification back (:mod:`._intake`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .._ratelimit import RateLimitedLog
from ..events import Notification
from ._intake import Intake
from ._outbox import Outbox
from ._publisher import Batch, Publisher

log = logging.getLogger("instrument.delivery")

_ADOPT_INTERVAL: Final = 5.0
_IDLE_INTERVAL: Final = 1.0  # deep sleep; also how often publisher.idle() runs
_POLL_INTERVAL: Final = 0.01  # while busy: look at the queue this often, unasked
_BUSY_FOR: Final = 1.0  # stay busy this long after the last work
_MIN_BACKOFF: Final = 0.01
_ABSORB_CHUNK: Final = 1000
_FORK_PAUSE: Final = 3.0  # longest a fork waits for the current step to end

# Publishers inherited over fork: they share the parent's sockets, so the child never
# closes them (or lets the garbage collector do so).
_abandoned: list[object] = []


class Worker:
    """Publishes what :class:`~instrument.delivery.Delivery` queued. See module docstring."""

    def __init__(
        self,
        intake: Intake,
        *,
        publisher_factory: Callable[[], Publisher],
        name: str,
        batch_size: int,
        outbox_path: str | None,
        max_retries: int,
        retry_backoff: float,
        retry_max_backoff: float,
        on_exit: Callable[[], None],
    ) -> None:
        self.name = name
        self._intake = intake
        self._factory = publisher_factory
        self._batch_size = batch_size
        self._outbox = Outbox(outbox_path, name) if outbox_path else None
        self._max_retries = max_retries
        self._initial_backoff = max(retry_backoff, _MIN_BACKOFF)
        self._max_backoff = max(retry_max_backoff, self._initial_backoff)
        self._backoff = self._initial_backoff
        self._publisher: Publisher | None = None
        self._connected = False
        self._inflight: Batch = []
        self._attempts = 0
        self._retry_at = 0.0
        self._next_adopt = 0.0
        self._next_idle_call = 0.0
        self._last_work = 0.0
        self._wake = threading.Event()
        self._sleeping = False
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._ready = threading.Event()
        self._failure_log = RateLimitedLog(log)
        self._counts = dict.fromkeys(
            ("sent", "expired", "abandoned", "retried", "failures", "adopted", "stored", "outbox"),
            0,
        )
        self._adopted_ids: set[int] = set()  # adopted rows not confirmed or dropped yet
        self._own_done = 0  # of sent + expired: notifications this engine accepted
        self._busy = threading.Lock()  # held by the thread while it works (see pause())
        self._last_error: str | None = None
        self._on_exit = on_exit
        self._thread = threading.Thread(target=self._run, name=f"instrument-{name}", daemon=True)

    # ------------------------------------------------------------ other threads

    def start(self) -> None:
        self._thread.start()

    def pause(self) -> bool:
        """Before ``fork()``: wait (bounded) until the thread is between two steps.

        True when paused; then :meth:`resume` must follow (in the parent).
        """
        if not self._thread.is_alive() or threading.current_thread() is self._thread:
            return False
        return self._busy.acquire(timeout=_FORK_PAUSE)

    def resume(self) -> None:
        self._busy.release()

    def wake(self) -> None:
        """After an append: wake the worker if it waits for work (cheap otherwise).

        The worker sets ``_sleeping`` before it looks at the queue, submit() appends
        before it looks at ``_sleeping``: one of the two always sees the other.
        """
        if self._sleeping and not self._wake.is_set():
            self._wake.set()

    def accepted(self) -> int:
        """How many notifications submit() queued so far (taken or still waiting)."""
        return self._intake.accepted()

    def wait_finished(self, timeout: float | None) -> bool:
        """Wait until what was accepted, and what was adopted, so far is confirmed or dropped.

        The two are counted apart: rows adopted after this call must not count for own
        notifications still pending.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._ready.wait(timeout):  # rows found at start-up count too
            return False
        own_target = self.accepted()
        adopted_target = self._counts["adopted"]
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
            if self._outbox is not None:
                self._outbox.close()
            return 0, False
        if self._thread.is_alive():
            self._thread.join(join_timeout)
        if self._thread.is_alive():
            return len(self._intake) + self._memory_inflight(), True
        return self._counts["abandoned"], False

    def abandon(self) -> None:
        """In a forked child: never touch this worker's publisher or outbox again."""
        _abandoned.append(self._publisher)
        self._publisher = None
        if self._outbox is not None:
            self._outbox.abandon()

    def stats(self) -> dict[str, Any]:
        counts: dict[str, Any] = dict(self._counts)
        counts["connected"] = self._connected
        counts["last_error"] = self._last_error
        return counts

    # ------------------------------------------------------------ worker thread

    def _run(self) -> None:
        try:
            with self._busy:
                self._open_outbox()
                self._maybe_adopt()
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
        self._absorb()
        self._maybe_adopt()
        if not self._inflight:
            self._inflight = self._take()
        if not self._inflight:
            self._idle()
            return
        self._last_work = time.monotonic()
        delay = self._retry_at - time.monotonic()
        if delay > 0:
            self._sleep(delay)
            return
        self._attempt()

    def _open_outbox(self) -> None:
        if self._outbox is None:
            return
        try:  # rows an earlier engine of this process left are adopted right after
            self._outbox.open()
        except Exception as exc:
            self._outbox_failed("cannot open", exc)

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

    def _absorb(self) -> None:
        """Move what submit() queued to the outbox, in one transaction per chunk."""
        while self._outbox is not None and self._intake:
            chunk = self._intake.take(_ABSORB_CHUNK)
            try:
                self._outbox.add([notification.to_json() for notification in chunk])
            except Exception as exc:
                self._intake.put_back(chunk)
                self._outbox_failed("cannot write to", exc)
                return
            self._counts["stored"] += len(chunk)
            self._counts["outbox"] += len(chunk)

    def _maybe_adopt(self) -> None:
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
            self._counts["adopted"] += len(adopted)
            self._counts["outbox"] += len(adopted)

    def _take(self) -> Batch:
        if self._outbox is None:
            return [(None, notification) for notification in self._intake.take(self._batch_size)]
        try:
            rows = self._outbox.load(self._batch_size)
        except Exception as exc:
            self._outbox_failed("cannot read", exc)
            return []
        batch: Batch = []
        for row_id, body in rows:
            try:
                batch.append((row_id, _parse(body)))
            except Exception as exc:  # a row no process can ever send
                log.error("%s: dropping unreadable outbox row %d: %s", self.name, row_id, exc)
                self._done_with([(row_id, _UNREADABLE)], "expired")
        return batch

    def _idle(self) -> None:
        now = time.monotonic()
        if self._connected and self._publisher is not None and now >= self._next_idle_call:
            self._next_idle_call = now + _IDLE_INTERVAL
            try:
                self._publisher.idle()
            except Exception as exc:
                self._last_error = str(exc)
                self._disconnect()
        if now - self._last_work < _BUSY_FOR:
            self._wait(_POLL_INTERVAL, wakeable=False)
        else:
            self._wait(_IDLE_INTERVAL, wakeable=True)

    def _sleep(self, delay: float) -> None:
        if self._outbox is None:  # nothing to do until the backoff ends
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
        try:
            if self._publisher is None:
                self._publisher = self._factory()
            if not self._connected:
                self._publisher.connect()
                self._connected = True
            self._publisher.publish_batch([notification for _, notification in batch])
        except Exception as exc:
            self._failed(batch, exc)
        else:
            self._succeeded(batch)

    def _succeeded(self, batch: Batch) -> None:
        if self._attempts:
            log.info("%s: delivering again after %d failed attempts", self.name, self._attempts)
        self._done_with(batch, "sent")
        self._attempts = 0
        self._backoff = self._initial_backoff
        self._retry_at = 0.0
        self._notify()

    def _failed(self, batch: Batch, exc: Exception) -> None:
        self._disconnect()
        self._last_error = str(exc) or type(exc).__name__
        self._counts["failures"] += 1
        self._attempts += 1
        self._retry_at = time.monotonic() + self._backoff
        if self._max_retries and self._attempts >= self._max_retries:
            self._give_up(batch)
        else:
            self._counts["retried"] += len(batch)
            self._failure_log.log(
                f"fail:{type(exc).__name__}",  # the text varies (hosts, counts): not a key
                logging.WARNING,
                "%s: cannot deliver %d notifications (attempt %d, retrying in %.2f s): %s",
                self.name,
                len(batch),
                self._attempts,
                self._backoff,
                self._last_error,
            )
        self._backoff = min(self._backoff * 2, self._max_backoff)

    def _give_up(self, batch: Batch) -> None:
        log.error(
            "%s: dropping %d notifications after %d failed attempts (%s_max_retries): %s; "
            "message ids %s",
            self.name,
            len(batch),
            self._attempts,
            self.name,
            self._last_error,
            ", ".join(notification.message_id for _, notification in batch[:5])
            + (", ..." if len(batch) > 5 else ""),
        )
        self._done_with(batch, "expired")
        self._attempts = 0
        self._notify()

    def _done_with(self, batch: Batch, outcome: str) -> None:
        """Count *batch* as ``sent`` or ``expired`` (own and adopted apart); forget it."""
        adopted = self._adopted_ids
        own = len(batch)
        if adopted:
            own -= sum(1 for row_id, _ in batch if row_id is not None and row_id in adopted)
            adopted.difference_update(row_id for row_id, _ in batch if row_id is not None)
        self._forget(batch)
        self._own_done += own  # first: flush() may read between the two
        self._counts[outcome] += len(batch)

    def _forget(self, batch: Batch) -> None:
        """The batch is done with (confirmed or given up): delete its outbox rows."""
        self._inflight = []
        ids = [row_id for row_id, _ in batch if row_id is not None]
        if not ids or self._outbox is None:
            return
        try:
            self._outbox.delete(ids)
            self._counts["outbox"] -= len(ids)
        except Exception as exc:  # they will be sent again: duplicates, not losses
            log.error(
                "%s: cannot delete %d sent rows from the outbox: %s", self.name, len(ids), exc
            )

    def _disconnect(self) -> None:
        self._connected = False
        if self._publisher is not None:
            try:
                self._publisher.close()
            except Exception:
                log.debug("%s: publisher close failed", self.name, exc_info=True)

    def _notify(self) -> None:
        with self._done:
            self._done.notify_all()

    def _memory_inflight(self) -> int:
        return sum(1 for row_id, _ in self._inflight if row_id is None)

    def _finish(self) -> None:
        """Thread exit: keep what can be kept in the outbox, count the rest, close."""
        self._intake.seal()  # first: what is queued before this is still stored or counted
        self._absorb()
        lost = len(self._intake.take(len(self._intake))) + self._memory_inflight()
        self._inflight = []
        self._counts["abandoned"] += lost
        self._disconnect()
        if self._outbox is not None:
            try:
                self._outbox.close()
            except Exception as exc:
                log.warning("%s: closing the outbox failed: %s", self.name, exc)
        self._notify()


_UNREADABLE: Final = Notification("", "", "", "", "", None)


def _parse(body: str) -> Notification:
    return Notification.from_dict(json.loads(body))
