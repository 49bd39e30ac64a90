"""The one image.send of a response, and waiting for the client off the request path.

A :class:`Report` is what a response's counter finishes with: what was written, and
whether the response was complete. Without a :class:`~instrument._connection.Connection`
(the server does not let the kit reach the client's TCP connection) it emits at once,
saying what was handed to the server. With one, what was written is checked against
what the client's TCP acknowledged. Decisions:

- **The worker never waits.** When the response ends, the connection is read once: if
  the client already acknowledged the response's last byte, or the connection is dead,
  the report is emitted there and then. Otherwise it is handed to the process's
  :class:`Settler`, one daemon thread that looks at what it holds once per 10 ms tick
  (a response waiting longer is looked at less often, up to every 100 ms) and emits:
  INFO when the response's last byte is acknowledged (and the response was complete),
  ERROR with the acknowledged count when the connection died or nothing moved for
  :data:`SETTLE_STALL` seconds.
- **A body not all given to the connection is not complete yet.** A server may keep a
  tail in its own buffers, out of the kernel's sight (eventlet gathers chunks under
  4 KiB and writes them after the body ends): until the connection has been given as
  many bytes as were counted, the response's end is read again, and only a client
  acknowledging that end makes it INFO.
- **At exit, complete responses get a moment.** A worker that ends after its last
  response (gunicorn's ``max_requests``, a reload) first reports the responses cut
  short as they stand (they can only be ERROR, and a process ending on a timeout may be
  killed a second later), then waits up to :data:`EXIT_WAIT` seconds for the complete
  ones to settle, and reports the rest as they stand.
- **The response's end, not the connection's.** The position of the last byte is what
  the connection had been given when the response ended (acknowledged, plus the send
  queue, plus what the server still buffers: waitress keeps up to 16 MiB and flushes
  its tail by itself once the task ends; on a dead connection that tail never leaves,
  so the response is not complete). A body the server sent itself ends where the
  kernel's count ends: waitress closes a file buffer once it is sent, when the next
  pipelined response may already wait in its buffers. A keep-alive connection may
  carry the next response meanwhile; it does not delay or blur this one.
- **Bounded.** The settler holds at most :data:`SETTLE_LIMIT` responses (each keeps a
  duplicate of its connection's descriptor). Past that, a response is reported as
  handed to the server, like on a server without ``TCP_INFO``; that is counted in
  :meth:`Settler.stats` and logged (rate-limited).
- **The duplicate keeps the socket open.** A server that closes a connection whose
  response is still held (gunicorn's sync worker) sends its FIN when the settler lets
  go: once the client acknowledged everything, or the connection died or stalled.
- **Fork-safe.** The thread starts with the first response it must hold and ends when
  it holds none; a forked child starts with an empty settler and a fresh lock (what
  the parent held is the parent's to report).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ._connection import Connection
from ._once import run_once
from ._ratelimit import RateLimitedLog
from .events import IMAGE_SEND
from .notifier import Notifier
from .payloads import send_payload

__all__ = ["SETTLE_LIMIT", "SETTLE_STALL", "Report", "Settler", "settler"]

# The logger the counter has always used: operators' logging configs name it.
log = logging.getLogger("instrument.sending")
_rate_limited = RateLimitedLog(log)

#: Seconds without an acknowledgement after which a held response is an ERROR.
SETTLE_STALL: Final = 30.0
#: How many responses the settler holds at once.
SETTLE_LIMIT: Final = 512
#: Seconds an exiting process waits for its held responses before reporting them.
EXIT_WAIT: Final = 10.0
_FIRST_PAUSE: Final = 0.001
_MAX_PAUSE: Final = 0.1
# The thread looks at most this often. Under load, responses arrive every few
# milliseconds: a look per tick serves all of them, where a wake-up per response (and
# the GIL hand-overs it costs the server's threads) cost more than the counting.
_TICK: Final = 0.01
# An idle thread keeps ticking this long before it ends: downloads come in streams, and
# a thread started for each one costs more than the ticks.
_IDLE_EXIT: Final = 5.0


class Report:
    """What the one image.send of a response needs, and the once-only guards.

    ``start`` is what the connection had been given before this response (earlier
    keep-alive responses), read once when the response starts.
    """

    __slots__ = (
        "_closed",
        "_done",
        "_lock",
        "connection",
        "expected",
        "fields",
        "notifier",
        "start",
    )

    def __init__(
        self,
        notifier: Notifier,
        expected: int | None,
        fields: dict[str, Any],
        connection: Connection | None = None,
    ) -> None:
        self.notifier = notifier
        self.expected = expected
        self.fields = fields
        self._lock = threading.Lock()
        self._done = False
        self._closed = False
        reading = connection.reading() if connection is not None else None
        if connection is not None and reading is None:  # not TCP, or not Linux's
            connection.close()
            connection = None
        self.connection = connection
        self.start = reading[1] if reading is not None else 0

    def finish(self, bytes_sent: int, complete: bool, *, drained: bool = False) -> None:
        """Report *bytes_sent* written, unless already done; never raises, never waits.

        *drained*: the server sent the body itself (zero-copy) and is done with it, so
        what it still holds belongs to later responses on the connection (waitress
        closes a file buffer once it is sent, and with pipelined requests the next
        response may already wait behind it): the response ends where the kernel's
        count ends.
        """
        with self._lock:
            if self._done:
                return
            self._done = True
        ok = complete and (self.expected is None or bytes_sent == self.expected)
        connection, self.connection = self.connection, None
        reading = connection.reading(count_held=not drained) if connection is not None else None
        if connection is None or reading is None:  # the kernel cannot say
            if connection is not None:
                connection.close()
            self.emit(bytes_sent, ok)
            return
        pending = Pending(self, connection, bytes_sent, ok, end=reading[1])
        if not pending.settles(reading, time.monotonic()):
            settler().hold(pending)

    def emit(self, bytes_sent: int, ok: bool) -> None:
        """Send image.send: INFO when *ok*, else ERROR; failures are logged."""
        try:
            payload = send_payload(bytes_sent=bytes_sent, **self.fields)
            (self.notifier.info if ok else self.notifier.error)(IMAGE_SEND, payload)
        except Exception:
            log.exception("cannot emit image.send for image %s", self.fields.get("image_id"))

    def claim_close(self) -> bool:
        """True exactly once: for the caller that must close the application iterable."""
        with self._lock:
            first, self._closed = not self._closed, True
            return first


@dataclasses.dataclass(eq=False, slots=True)
class Pending:
    """A response written to a connection whose client may not have acknowledged it yet."""

    report: Report
    connection: Connection
    written: int
    ok: bool
    end: int  # the connection's position after this response's last byte
    acked: int = -1
    stalls_at: float = 0.0
    due: float = 0.0
    pause: float = _FIRST_PAUSE
    released: bool = False
    _released: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def settles(self, reading: tuple[int, int, bool] | None, now: float) -> bool:
        """Emit and let go if *reading* settles the response; else note the progress."""
        if reading is None:  # the descriptor went bad: the last reading is all there is
            return self.release(self.acknowledged(self.acked), False)
        acked, given, alive = reading
        short = self.end - self.report.start < self.written
        if short and given > self.end:  # the server wrote what it had kept back
            self.end = given
            short = self.end - self.report.start < self.written
        if acked >= self.end and not short:
            return self.release(self.written, self.ok)
        if not alive or (acked == self.acked and now >= self.stalls_at):
            return self.release(self.acknowledged(acked), False)
        if acked != self.acked:
            self.acked, self.stalls_at = acked, now + SETTLE_STALL
        self.due, self.pause = now + self.pause, min(self.pause * 2, _MAX_PAUSE)
        return False

    def acknowledged(self, acked: int) -> int:
        """The body bytes among the first *acked* of the connection.

        The head precedes the body: what the response gave beyond its body bounds the
        head from below (a write cut short leaves less), so this errs upwards.
        """
        start = self.report.start
        head = max(self.end - start - self.written, 0)
        return min(max(acked - start - head, 0), self.written)

    def release(self, bytes_sent: int, ok: bool) -> bool:
        """Emit, close the duplicate descriptor; True. Once: later calls do nothing (the
        exit hook and the thread may both reach a response)."""
        with self._released:
            if self.released:
                return True
            self.released = True
        self.connection.close()
        self.report.emit(bytes_sent, ok)
        return True


class Settler:
    """Holds responses until their client acknowledged them; see the module doc."""

    def __init__(self, limit: int = SETTLE_LIMIT) -> None:
        self._limit = limit
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # held: fewer, or one more
        self._held: list[Pending] = []
        self._thread: threading.Thread | None = None
        self._counts = dict.fromkeys(("held", "settled", "gave_up"), 0)

    def hold(self, pending: Pending) -> None:
        """Watch *pending* from the settler's thread (started if needed)."""
        with self._lock:
            if len(self._held) >= self._limit:
                self._counts["gave_up"] += 1
            else:
                self._counts["held"] += 1
                self._held.append(pending)
                self._start()  # a running thread looks within a tick: no wake-up
                return
        _rate_limited.log(
            "full",
            logging.WARNING,
            "instrument: %d downloads already wait for their client's acknowledgements; "
            "image.send of image %s says what was handed to the server",
            self._limit,
            pending.report.fields.get("image_id"),
        )
        pending.release(pending.written, pending.ok)

    def step(self) -> float:
        """Poll what is due; the seconds until the next is due (None held: the longest)."""
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._held if p.due <= now]
        settled = [p for p in due if _settles(p, now)]
        with self._changed:
            for pending in settled:
                if pending in self._held:  # the exit hook may have taken it
                    self._held.remove(pending)
            self._counts["settled"] += len(settled)
            self._changed.notify_all()
            if not self._held:
                return _MAX_PAUSE
            return max(min(p.due for p in self._held) - time.monotonic(), 0.0)

    def settled(self, timeout: float | None = None) -> bool:
        """Wait until nothing is held (tests, a demo, a shutdown); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._held, timeout)

    def stats(self) -> dict[str, int]:
        """``held`` (ever), ``settled``, ``gave_up`` (held past the limit), ``holding`` now."""
        with self._lock:
            return {**self._counts, "holding": len(self._held)}

    def after_fork(self) -> None:
        """In a forked child: forget the parent's responses (closing their duplicates)."""
        for pending in self._held:
            with contextlib.suppress(Exception):
                pending.connection.close()
        self._reset()

    def report_held(self, wait: float = EXIT_WAIT) -> None:
        """At exit: report what was cut short, wait up to *wait* seconds for the rest to
        settle, then report every response still held as it stands (ERROR unless the
        client acknowledged all of it), so none goes without its image.send."""
        self._report(lambda pending: not pending.ok)
        if wait > 0:
            with self._lock:
                running = self._thread is not None and self._thread.is_alive()
            if running:
                self.settled(wait)
        self._report(lambda pending: True)

    def _report(self, which: Callable[[Pending], bool]) -> None:
        """Report the held responses *which* selects, as they stand."""
        held: list[Pending] = []
        kept: list[Pending] = []
        with self._lock:
            for pending in self._held:
                (held if which(pending) else kept).append(pending)
            self._held = kept
        for pending in held:
            with contextlib.suppress(Exception):
                reading = pending.connection.reading()
                # Settled (or without a reading, reported as last seen), else as it stands.
                if not pending.settles(reading, time.monotonic()) and reading is not None:
                    pending.release(pending.acknowledged(reading[0]), False)

    def _start(self) -> None:
        """Start the thread unless it runs (lock held)."""
        _report_held_at_exit()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="instrument-send", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        idle_since: float | None = None
        while True:
            try:
                wait = self.step()
            except Exception:  # never let the thread die with responses held
                log.exception("instrument: settling image.send failed")
                wait = _MAX_PAUSE
            with self._changed:
                pause = max(wait, _TICK)
                if self._held:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= _IDLE_EXIT:
                    self._thread = None
                    return
            time.sleep(pause)


def _settles(pending: Pending, now: float) -> bool:
    """*pending* settles now; one that fails to be looked at is reported as it stands."""
    try:
        return pending.settles(pending.connection.reading(), now)
    except Exception:
        log.exception("instrument: settling image.send failed")
        with contextlib.suppress(Exception):
            pending.release(pending.acknowledged(pending.acked), False)
        return True


_settler = Settler()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _settler.after_fork())


@run_once
def _report_held_at_exit() -> None:
    """Registered with the first held response, so after the delivery engine's exit hook
    (the kit's strategies are built by then) and so run before it: what is reported
    here still reaches the engine before it closes."""
    atexit.register(_settler.report_held)


def settler() -> Settler:
    """The process's settler."""
    return _settler
