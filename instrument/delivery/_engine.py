"""The engine: :class:`Delivery`, a bounded queue in front of one worker.

Decisions:

* **The request path never waits on a broker.** Without an outbox
  :meth:`Delivery.submit` appends to a bounded :class:`collections.deque`
  (:mod:`._intake`): no I/O, no lock (p50 0.3 us, p99 3 us). With ``outbox_path`` it
  returns once the record is written to this engine's journal (one ``write(2)``, no
  fsync, :mod:`._outbox`): a SIGKILL right after loses nothing. When the journal
  refuses (disk full, read-only, deleted) the notification goes to the memory queue
  instead, counted ``unkept`` and logged: delivered if the process lives, lost if not.
  A busy worker polls every 10 ms; only an idle one (nothing for a second) is woken
  by an event, so most emits never pay a thread wake-up.
* **Overflow policy: the newest is refused.** When ``queue_size`` notifications wait
  in memory, :meth:`Delivery.submit` drops the one being emitted, counts it
  (``overflow``) and logs at most once a minute. What was accepted earlier keeps its
  place, so a consumer sees a gap, not a reordering. With a journal that takes appends
  nothing waits in memory, so only a journal that refuses can overflow.
* **The worker starts lazily**, on the first :meth:`Delivery.submit` (or
  :meth:`Delivery.flush` with an outbox, which also adopts journals left by dead
  processes), never in the constructor: a gunicorn ``preload_app`` master that builds
  the strategy and forks before emitting has no thread that could be inside OpenSSL
  at ``fork()``, and no journal its children would share. The journal is created then
  too, in the calling thread, so the first emit is already on disk. The constructor
  only imports an earlier version's SQLite outbox (:mod:`._legacy`): no thread, no
  file left open.
* **After fork()** (:mod:`._process` pauses the worker around it) the child gets fresh
  locks, an empty queue, fresh counters, a new publisher (the inherited one shares the
  parent's socket and is never touched again) and a new, not yet started, worker. The
  parent's queued notifications stay the parent's.
* **Shutdown**: :meth:`Delivery.close` (also run at interpreter exit for every engine
  not closed: engines are held strongly until closed, so a forgotten one is still
  flushed) waits up to ``close_timeout`` seconds for pending notifications; without an
  outbox what is left is counted as dropped (``abandoned``); with one, what is in the
  journal stays on disk for the next process (said so, counted), what is only in
  memory is counted as abandoned. A :meth:`Delivery.submit` racing with :meth:`Delivery.close`
  is either delivered by the worker or counted as abandoned, never lost uncounted; it
  takes its notification back only once the worker has taken its last look at the
  queue (:meth:`Intake.take_back`), so close() never waits for a notification that
  nobody will send.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from .._ratelimit import RateLimitedLog
from ..events import Notification
from ..exceptions import StrategyError
from . import _process
from ._intake import Intake
from ._legacy import upgrade
from ._outbox import Outbox, encode
from ._publisher import Publisher
from ._worker import Worker

__all__ = ["Delivery"]

log = logging.getLogger("instrument.delivery")


class Delivery:
    """A bounded queue and the worker that empties it into a :class:`Publisher`."""

    def __init__(
        self,
        publisher_factory: Callable[[], Publisher],
        *,
        name: str = "delivery",
        queue_size: int = 10000,
        batch_size: int = 200,
        outbox_path: str | None = None,
        outbox_fsync_interval: float = 1.0,
        max_retries: int = 0,
        retry_backoff: float = 2.0,
        retry_max_backoff: float = 30.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.queue_size = queue_size
        self.close_timeout = close_timeout
        self._make_worker = functools.partial(
            Worker,
            publisher_factory=publisher_factory,
            name=name,
            batch_size=batch_size,
            fsync_interval=outbox_fsync_interval,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            retry_max_backoff=retry_max_backoff,
            on_exit=self._worker_ended,
        )
        self._outbox_root = _journal_root(outbox_path)
        self._has_outbox = outbox_path is not None
        self._outbox_log = RateLimitedLog(log)
        self._overflow_log = RateLimitedLog(log)
        self._closed = False
        self._start()
        _process.keep(self)

    def _start(self) -> None:
        """Fresh state and a worker that is not running yet (see :meth:`_run_worker`)."""
        self._intake = Intake()
        self._lock = threading.Lock()
        self._overflow = 0
        self._unkept = 0
        root = self._outbox_root
        self._outbox = Outbox(root, self.name) if root else None
        self._worker = self._make_worker(self._intake, outbox=self._outbox)
        self._running = False

    def _run_worker(self) -> None:
        """Start the worker thread once (first submit, or flush with an outbox)."""
        with self._lock:
            if not self._running and not self._closed:
                self._open_outbox()
                self._worker.start()
                self._running = True

    def _open_outbox(self) -> None:
        """Create the journal (lock held); on failure the worker retries it every second."""
        if self._outbox is None:
            return
        try:
            self._outbox.open()
        except OSError as exc:
            self._outbox.error = str(exc)
            log.error("%s: cannot open the outbox %s: %s", self.name, self._outbox_root, exc)

    def submit(self, notification: Notification) -> bool:
        """Journal (or enqueue) *notification*; False (counted, logged) when it is dropped.

        Raises :class:`StrategyError` once the engine is closed.
        """
        if self._closed:
            raise StrategyError(f"{self.name}: delivery is closed")
        if not self._running:
            self._run_worker()
        outbox = self._outbox
        if outbox is not None:
            if outbox.append(encode(notification)):
                self._worker.wake()
                return True
            self._refused(outbox)
        if len(self._intake) >= self.queue_size:
            with self._lock:
                self._overflow += 1
            self._overflow_log.log(
                "overflow",
                logging.ERROR,
                "%s: %d notifications wait for the broker; dropping new ones (queue_size)",
                self.name,
                self.queue_size,
            )
            return False
        self._intake.append(notification)
        self._worker.wake()
        # close() ran meanwhile: its worker may never see this one (Intake.take_back)
        if self.closed and self._intake.take_back(notification, worker_started=self._running):
            log.error("%s: a notification submitted during close() is dropped", self.name)
            return False
        return True

    def _refused(self, outbox: Outbox) -> None:
        """The journal refused a notification: it is kept in memory only (counted, logged)."""
        with self._lock:
            self._unkept += 1
        self._outbox_log.log(
            "unkept",
            logging.ERROR,
            "%s: the outbox %s cannot take notifications (%s); keeping them in memory "
            "only (lost if the process dies) until it can",
            self.name,
            self._outbox_root,
            outbox.error,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything accepted so far is confirmed or dropped; False on timeout.

        With an outbox this starts the worker, so rows of dead processes are adopted and
        waited for too.
        """
        if not self._running:
            if not self._has_outbox or self._closed:
                return not self._intake
            self._run_worker()
        return self._worker.wait_finished(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to *timeout* (default ``close_timeout``), then stop the worker."""
        with self._lock:  # _run_worker() starts no worker from now on
            if self._closed:
                return
            self._closed = True
            running = self._running
        if running:
            self.flush(self.close_timeout if timeout is None else timeout)
        pending, busy = self._worker.stop(join_timeout=2.0)
        kept = self._worker.stats()["outbox"]
        if busy and not self._has_outbox:  # it stays registered (see _worker_ended)
            log.warning(
                "%s: close() timed out with %d notifications not confirmed; the worker is "
                "still waiting on the broker and finishes in the background: what it cannot "
                "send then is counted as abandoned (lost)",
                self.name,
                pending,
            )
            return
        if busy:
            log.warning(
                "%s: close() timed out: the worker is still waiting on the broker and "
                "finishes in the background; %d notifications not confirmed are in the "
                "outbox %s for the next process, %d held in memory only are lost unless "
                "it sends them now",
                self.name,
                kept,
                self._outbox_root,
                pending,
            )
            return
        _process.forget(self)  # only now that its worker has ended (or never started)
        if kept:
            log.warning(
                "%s: %d notifications not confirmed stay in the outbox %s for the next process",
                self.name,
                kept,
                self._outbox_root,
            )
        if pending:
            log.error(
                "%s: %d notifications were not delivered before close() and are lost "
                "(set outbox_path to keep them for the next process)",
                self.name,
                pending,
            )

    def stats(self) -> dict[str, Any]:
        """Counters; ``accepted`` + ``overflow`` is every call of :meth:`submit`.

        With an outbox: ``stored`` were written to the journal, ``outbox`` are on disk
        and not confirmed yet, ``unkept`` were accepted while the journal refused them
        (memory only), ``damaged`` records found unreadable on disk (lost, also counted
        in ``expired``), ``outbox_error`` why the journal refuses (None when it takes).
        ``dropped`` = ``overflow`` + ``expired`` (retries exhausted) + ``abandoned``
        (still in memory at close); ``queued`` = accepted (or adopted from the outbox)
        but neither confirmed nor dropped yet.
        """
        late = self._intake.taken_back
        accepted = self._worker.accepted()
        counts: dict[str, Any] = {
            "accepted": accepted + late,
            "overflow": self._overflow,
            "unkept": self._unkept,
        }
        counts.update(self._worker.stats())
        ended = counts["sent"] + counts["expired"] + counts["abandoned"]  # by the worker
        counts["queued"] = max(0, accepted + counts["adopted"] - ended)
        counts["abandoned"] += late  # taken back at close: never among the accepted above
        counts["dropped"] = self._overflow + counts["expired"] + counts["abandoned"]
        return counts

    @property
    def closed(self) -> bool:
        return self._closed

    def _worker_ended(self) -> None:
        """The worker thread's last act: forks no longer need to pause it."""
        if self._closed:
            _process.forget(self)

    def pause_for_fork(self) -> bool:
        """Before ``fork()``: pause a running worker between two steps (bounded).

        True when paused; :meth:`resume_after_fork` must then follow in the parent.
        """
        return self._running and self._worker.pause()

    def resume_after_fork(self) -> None:
        """In the parent after ``fork()``: the worker paused by :meth:`pause_for_fork` goes on."""
        self._worker.resume()

    def restart_in_child(self) -> None:
        """In a forked child: fresh state and a new worker; nothing inherited is touched."""
        self._worker.abandon()
        if self._closed:  # its worker, if any, goes on in the parent only
            _process.forget(self)
        else:
            self._start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Delivery {self.name!r} {state} queued={self.stats()['queued']}>"


def _journal_root(outbox_path: str | None) -> str | None:
    """The directory of the journals, after importing an earlier version's SQLite outbox.

    The import (:mod:`._legacy`) runs here, in the constructor, never in a request; one
    that fails leaves the file alone and the journals go beside it, to ``<path>.d``.
    """
    if outbox_path is None:
        return None
    try:
        upgrade(outbox_path)
    except (OSError, sqlite3.Error) as exc:
        log.error("outbox_path %s: cannot import the earlier outbox there: %s", outbox_path, exc)
    if not os.path.isfile(outbox_path):
        return outbox_path
    log.warning("outbox_path %s is a file; journals go to %s.d instead", outbox_path, outbox_path)
    return f"{outbox_path}.d"
