"""The delivery engine shared by the broker strategies: emit enqueues, a worker publishes.

Decisions:

* **The request path never waits on a broker.** :meth:`Delivery.submit` appends to a
  bounded :class:`collections.deque`: no I/O, no lock, whatever the broker is doing
  (p50 0.3 us, p99 3 us). A busy worker polls the queue every 10 ms; only an idle one
  (nothing for a second) is woken by an event, so most emits never pay a thread
  wake-up.
* **One daemon worker per process** (a greenlet under eventlet/gevent monkey-patching:
  only :mod:`threading` primitives are used) publishes batches of up to ``batch_size``
  through a :class:`Publisher`, which returns only once the broker confirmed the whole
  batch. A failed batch is retried as it was, after an exponential backoff
  (``<prefix>_retry_backoff`` doubling up to ``<prefix>_retry_max_backoff``). With
  ``<prefix>_max_retries = 0`` (Glance's default) it is retried forever; with N it is
  dropped after N failed attempts, logged and counted (``expired``), never silently.
* **Overflow policy: the newest is refused.** When ``queue_size`` notifications wait
  in memory, :meth:`submit` drops the one being emitted, counts it (``overflow``) and
  logs at most once a minute. What was accepted earlier keeps its place, so a
  consumer sees a gap, not a reordering. With an outbox the memory queue drains to disk
  within milliseconds, so only a stalled disk can overflow.
* **Optional outbox** (``outbox_path``, :mod:`instrument.delivery._outbox`): the worker moves
  accepted notifications to SQLite before publishing and deletes rows only after the
  broker confirmed them; rows left by a killed process are adopted and delivered.
* **The worker starts lazily**, on the first :meth:`Delivery.submit` (or
  :meth:`Delivery.flush` with an outbox, which also adopts rows left by dead
  processes), never in the constructor: a gunicorn ``preload_app`` master that builds
  the strategy and forks before emitting has no thread that could be inside SQLite or
  OpenSSL at ``fork()``.
* **Fork safety**: a running worker is paused between two steps around ``fork()``
  (``os.register_at_fork``; bounded, a step stuck on a broker delays a fork by at most
  a few seconds). Then the fork waits (bounded too) for an outbox call under way: when
  the pause gave up, the worker may be about to enter SQLite, and a fork must never
  land inside it. An engine is paused until its worker has ended, also after close()
  gave up waiting for it. After ``fork()`` the child gets fresh locks, an empty queue,
  fresh counters, a new publisher (the inherited one shares the parent's socket and is
  never touched again) and a new, not yet started, worker. The parent's queued
  notifications stay the parent's.
* **Shutdown**: :meth:`Delivery.close` (also run at interpreter exit for every engine
  not closed: engines are held strongly until closed, so a forgotten one is still
  flushed) waits up to ``close_timeout`` seconds for pending notifications; without an
  outbox what is left is counted as dropped (``abandoned``), with one it stays on disk
  for the next process. A :meth:`Delivery.submit` racing with :meth:`Delivery.close`
  is either delivered by the worker or counted as abandoned, never lost uncounted; it
  takes its notification back only once the worker has taken its last look at the
  queue, so close() never waits for a notification that nobody will send.
"""

from __future__ import annotations

import atexit
import collections
import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from .._ratelimit import RateLimitedLog
from ..events import Notification
from ..exceptions import StrategyError
from . import _outbox
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
            outbox_path=outbox_path,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            retry_max_backoff=retry_max_backoff,
            on_exit=self._worker_ended,
        )
        self._has_outbox = outbox_path is not None
        self._overflow_log = RateLimitedLog(log)
        self._closed = False
        self._start()
        _engines.add(self)

    def _start(self) -> None:
        """Fresh state and a worker that is not running yet (see :meth:`_run_worker`)."""
        self._queue: collections.deque[Notification] = collections.deque()
        self._lock = threading.Lock()
        self._overflow = 0
        self._late = 0  # accepted while close() ran, taken back and counted abandoned
        self._worker = self._make_worker(self._queue)
        self._running = False

    def _run_worker(self) -> None:
        """Start the worker thread once (first submit, or flush with an outbox)."""
        with self._lock:
            if not self._running and not self._closed:
                self._worker.start()
                self._running = True

    def submit(self, notification: Notification) -> bool:
        """Enqueue *notification*; False (counted, logged) when the queue is full.

        Raises :class:`StrategyError` once the engine is closed.
        """
        if self._closed:
            raise StrategyError(f"{self.name}: delivery is closed")
        if not self._running:
            self._run_worker()
        if len(self._queue) >= self.queue_size:
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
        self._queue.append(notification)
        self._worker.wake()
        if self.closed:  # close() ran meanwhile: its worker may never see this one
            return self._take_back(notification)
        return True

    def _take_back(self, notification: Notification) -> bool:
        """After a race with close(): remove *notification* if the worker will never see it.

        Until a running worker is sealed it still sends, stores or counts what is
        queued, and close()'s flush may already be waiting for this one: taking it back
        then would make close() wait its whole timeout for a notification that nobody
        sends. A worker that never started never will (close() saw to that): what it
        would have found is taken back in any case.
        """
        with self._worker.take_lock:
            if self._running and not self._worker.sealed:
                return True
            try:
                self._queue.remove(notification)
            except ValueError:  # the worker has it: it sends, stores or counts it
                return True
            self._late += 1
        log.error("%s: a notification submitted during close() is dropped", self.name)
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything accepted so far is confirmed or dropped; False on timeout.

        With an outbox this starts the worker, so rows of dead processes are adopted and
        waited for too.
        """
        if not self._running:
            if not self._has_outbox or self._closed:
                return not self._queue
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
        if busy:  # it stays registered: its thread unregisters it as it ends (_worker_ended)
            log.warning(
                "%s: close() timed out with %d notifications not confirmed; the worker is "
                "still waiting on the broker and finishes in the background: what it cannot "
                "send then is %s",
                self.name,
                pending,
                "kept in the outbox" if self._has_outbox else "counted as abandoned (lost)",
            )
            return
        _engines.discard(self)  # only now that its worker has ended (or never started)
        if pending:
            log.error(
                "%s: %d notifications were not delivered before close() and are lost "
                "(set outbox_path to keep them for the next process)",
                self.name,
                pending,
            )

    def stats(self) -> dict[str, Any]:
        """Counters; ``accepted`` + ``overflow`` is every call of :meth:`submit`.

        ``dropped`` = ``overflow`` + ``expired`` (retries exhausted) + ``abandoned``
        (still in memory at close); ``queued`` = accepted (or adopted from the outbox)
        but neither confirmed nor dropped yet.
        """
        late = self._late
        accepted = self._worker.accepted()
        counts: dict[str, Any] = {"accepted": accepted + late, "overflow": self._overflow}
        counts.update(self._worker.stats())
        counts["abandoned"] += late
        counts["dropped"] = self._overflow + counts["expired"] + counts["abandoned"]
        counts["queued"] = max(0, accepted + counts["adopted"] - counts["sent"] - counts["expired"])
        return counts

    @property
    def closed(self) -> bool:
        return self._closed

    def _worker_ended(self) -> None:
        """The worker thread's last act: forks no longer need to pause it."""
        if self._closed:
            _engines.discard(self)

    def _after_fork_in_child(self) -> None:
        self._worker.abandon()
        if self._closed:  # its worker, if any, goes on in the parent only
            _engines.discard(self)
        else:
            self._start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Delivery {self.name!r} {state} queued={self.stats()['queued']}>"


# Every engine not closed yet, and every closed one whose worker still runs, held
# strongly: one dropped without close() still has its worker running, and must still
# be flushed at exit; one closed must still be paused at fork until its worker ended.
_engines: set[Delivery] = set()
# Engines whose worker a fork under way paused, by forking thread: two threads forking
# at once each resume only the workers they paused themselves.
_paused: dict[int, list[Delivery]] = {}


def _before_fork() -> None:
    paused = _paused.setdefault(threading.get_ident(), [])
    for engine in list(_engines):
        if engine._running and engine._worker.pause():
            paused.append(engine)
    # After the pauses: a paused worker holds no outbox call, one that could not be
    # paused finishes the call it is in and then waits for the fork at its next one.
    if not _outbox.hold_for_fork():
        log.warning(
            "fork(): an outbox (SQLite) call did not end within %.0f s; forking anyway",
            _outbox._FORK_WAIT,
        )


def _after_fork_in_parent() -> None:
    _outbox.release_after_fork()
    for engine in _paused.pop(threading.get_ident(), []):
        engine._worker.resume()


def _after_fork_in_child() -> None:
    _outbox.reset_after_fork()
    _paused.clear()  # the child's workers are replaced, their locks never used again
    for engine in list(_engines):
        engine._after_fork_in_child()


def _close_all_at_exit() -> None:
    for engine in list(_engines):
        try:
            engine.close()
        except Exception:  # interpreter exit: report, never raise
            log.exception("%s: close at exit failed", engine.name)


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
atexit.register(_close_all_at_exit)
