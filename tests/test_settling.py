"""Settling image.send off the request path, against a connection the test scripts.

The kernel's view of the connection (``(acked, given, alive)``) is set by the test;
nothing here measures time: each test waits for the settler with
:meth:`~instrument._settling.Settler.settled`.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from typing import Any

import pytest

from instrument import Notifier, _settling
from instrument._settling import Report, Settler, settler
from instrument.strategies.memory import MemoryStrategy

HEAD = 100  # the response head, ahead of the body on the connection
BODY = 1000
FIELDS = {
    "image_id": "img-1",
    "owner_id": None,
    "receiver_tenant_id": None,
    "receiver_user_id": None,
    "destination_ip": None,
}


class ScriptedConnection:
    """Stands in for :class:`instrument._connection.Connection`; the test moves it.

    Each move is atomic for the settler's thread, as a kernel reading is.
    """

    def __init__(self, given: int = 0) -> None:
        self._lock = threading.Lock()
        self.acked = self.given = given
        self.held = 0  # what the server still buffers (waitress)
        self.alive = True
        self.broken = False
        self.closes = 0

    def write(self, count: int) -> None:
        with self._lock:
            self.given += count

    def ack(self, count: int | None = None, *, alive: bool = True) -> None:
        with self._lock:
            self.acked = self.given if count is None else self.acked + count
            self.alive = alive

    def reading(self, *, count_held: bool = True) -> tuple[int, int, bool] | None:
        with self._lock:
            if self.broken:
                return None
            return self.acked, self.given + (self.held if count_held else 0), self.alive

    def close(self) -> None:
        self.closes += 1


@pytest.fixture
def notifier() -> Notifier:
    return Notifier(MemoryStrategy(), publisher_id="test")


def sends(notifier: Notifier) -> list[tuple[str, int]]:
    [memory] = notifier.strategies
    assert isinstance(memory, MemoryStrategy)
    return [(n.priority, n.payload["bytes_sent"]) for n in memory.notifications]


def respond(notifier: Notifier, connection: ScriptedConnection, expected: int = BODY) -> Report:
    """A report started on *connection*, then a head and a body written to it."""
    report = Report(notifier, expected, dict(FIELDS), connection)  # type: ignore[arg-type]
    connection.write(HEAD + BODY)
    return report


def test_the_worker_returns_before_the_client_acknowledged_then_info(notifier: Notifier) -> None:
    connection = ScriptedConnection(given=5000)  # an earlier keep-alive response
    respond(notifier, connection).finish(BODY, True)
    assert sends(notifier) == []  # finish() returned: nothing acknowledged yet
    connection.ack()
    assert settler().settled(timeout=10)
    assert sends(notifier) == [("INFO", BODY)]
    assert connection.closes == 1


def test_already_acknowledged_is_reported_by_the_caller_without_the_settler(
    notifier: Notifier,
) -> None:
    connection = ScriptedConnection()
    report = respond(notifier, connection)
    connection.ack()
    held = settler().stats()["held"]
    report.finish(BODY, True)
    assert sends(notifier) == [("INFO", BODY)]
    assert settler().stats()["held"] == held


def test_the_next_response_on_the_connection_does_not_delay_this_one(notifier: Notifier) -> None:
    connection = ScriptedConnection()
    respond(notifier, connection).finish(BODY, True)
    connection.write(HEAD + BODY)  # the next keep-alive response, not acknowledged
    connection.ack(HEAD + BODY)
    assert settler().settled(timeout=10)
    assert sends(notifier) == [("INFO", BODY)]


def test_a_connection_that_dies_is_an_error_with_what_was_acknowledged(notifier: Notifier) -> None:
    connection = ScriptedConnection()
    respond(notifier, connection).finish(BODY, True)
    connection.ack(HEAD + 300, alive=False)
    assert settler().settled(timeout=10)
    assert sends(notifier) == [("ERROR", 300)]


def test_a_tail_the_server_still_holds_on_a_dead_connection_is_an_error(
    notifier: Notifier,
) -> None:
    connection = ScriptedConnection()
    report = respond(notifier, connection)
    connection.given -= 10
    connection.held = 10  # the body's tail, kept by the server (waitress)
    connection.ack(alive=False)  # all the kernel got was acknowledged, then a reset
    report.finish(BODY, True)
    assert sends(notifier) == [("ERROR", BODY - 10)]


def test_a_drained_response_ends_where_the_kernel_count_ends(notifier: Notifier) -> None:
    connection = ScriptedConnection()
    report = respond(notifier, connection)
    connection.held = 5000  # the next pipelined response, queued behind this one
    connection.ack()
    report.finish(BODY, True, drained=True)  # the server sent the file itself
    assert sends(notifier) == [("INFO", BODY)]


def test_a_descriptor_gone_bad_is_an_error_with_the_last_acknowledged(notifier: Notifier) -> None:
    connection = ScriptedConnection()
    report = respond(notifier, connection)
    connection.ack(HEAD + 200)
    report.finish(BODY, True)
    connection.broken = True
    assert settler().settled(timeout=10)
    assert sends(notifier) == [("ERROR", 200)]


def test_a_stalled_client_is_an_error_after_the_stall_bound(
    notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_settling, "SETTLE_STALL", 0.0)
    connection = ScriptedConnection()
    report = respond(notifier, connection)
    connection.ack(HEAD + 400)  # some progress, then none
    report.finish(BODY, True)
    assert settler().settled(timeout=10)
    assert sends(notifier) == [("ERROR", 400)]


def test_an_incomplete_response_is_an_error_with_what_the_client_got_in_the_end(
    notifier: Notifier,
) -> None:
    connection = ScriptedConnection()
    respond(notifier, connection).finish(BODY - 10, False)  # the app raised
    connection.ack()
    assert settler().settled(timeout=10)
    assert sends(notifier) == [("ERROR", BODY - 10)]


def test_at_exit_a_response_cut_short_is_reported_before_the_wait(notifier: Notifier) -> None:
    """A process ending on a timeout (gunicorn's SIGABRT) is killed a second later: what
    can only be ERROR is reported first, as it stands."""
    cut, complete = ScriptedConnection(), ScriptedConnection()
    respond(notifier, cut).finish(BODY, False)  # the server gave up on it
    respond(notifier, complete).finish(BODY, True)
    cut.ack(HEAD + 300)
    reported: list[list[tuple[str, int]]] = []
    threading.Timer(0.5, lambda: reported.append(sends(notifier))).start()
    threading.Timer(1.0, complete.ack).start()
    settler().report_held(wait=10)
    assert reported == [[("ERROR", 300)]]  # before the complete one settled
    assert sends(notifier) == [("ERROR", 300), ("INFO", BODY)]


def test_without_a_reading_the_report_says_what_was_handed_to_the_server(
    notifier: Notifier,
) -> None:
    connection = ScriptedConnection()
    report = respond(notifier, connection)
    connection.broken = True
    report.finish(BODY, True)
    assert sends(notifier) == [("INFO", BODY)]
    assert connection.closes == 1


def test_past_its_limit_the_settler_reports_what_was_handed_to_the_server(
    notifier: Notifier,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    full = Settler(limit=1)
    monkeypatch.setattr(_settling, "_settler", full)
    first, second = ScriptedConnection(), ScriptedConnection()
    respond(notifier, first).finish(BODY, True)
    with caplog.at_level(logging.WARNING, "instrument.sending"):
        respond(notifier, second).finish(BODY, True)
    assert sends(notifier) == [("INFO", BODY)]  # the second, at once, unconfirmed
    assert second.closes == 1
    assert full.stats()["gave_up"] == 1
    assert "handed to the server" in caplog.text
    first.ack()
    assert full.settled(timeout=10)
    assert full.stats() == {"held": 1, "settled": 1, "gave_up": 1, "holding": 0}


def test_emits_once_however_often_finished(notifier: Notifier) -> None:
    connection = ScriptedConnection()
    report = respond(notifier, connection)
    report.finish(BODY, True)
    report.finish(BODY, False)
    connection.ack()
    assert settler().settled(timeout=10)
    assert sends(notifier) == [("INFO", BODY)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_with_an_empty_settler(notifier: Notifier) -> None:
    connection = ScriptedConnection()
    respond(notifier, connection).finish(BODY, True)
    assert settler().stats()["holding"] == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing held, and it can hold and settle on its own
        try:
            mine = ScriptedConnection()
            respond(Notifier(MemoryStrategy()), mine).finish(BODY, True)
            mine.ack()
            ok = settler().settled(timeout=10) and settler().stats()["held"] == 1
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(read)
    connection.ack()
    assert settler().settled(timeout=10)


def test_the_settler_thread_ends_when_nothing_is_held(notifier: Notifier) -> None:
    connection = ScriptedConnection()
    respond(notifier, connection).finish(BODY, True)
    connection.ack()
    assert settler().settled(timeout=10)
    names: list[Any] = []
    for _ in range(1000):
        names = [t.name for t in threading.enumerate() if t.name == "instrument-send"]
        if not names:
            break
        threading.Event().wait(0.01)
    assert names == []


def test_what_is_held_at_exit_is_reported_as_it_stands(notifier: Notifier) -> None:
    """A worker recycled, or stopped, while its clients are still reading: every held
    response gets its image.send, ERROR with what the client acknowledged so far."""
    connection = ScriptedConnection()
    report = respond(notifier, connection)
    report.finish(BODY, True)  # held: nothing acknowledged yet
    connection.ack(HEAD + 400)
    assert sends(notifier) == []
    settler().report_held(wait=0)  # as it stands: the wait is the next test's
    assert sends(notifier) == [("ERROR", 400)] and connection.closes == 1
    assert settler().settled(timeout=5)


def test_a_body_the_server_kept_part_of_is_complete_only_once_it_was_given(
    notifier: Notifier,
) -> None:
    """eventlet keeps a tail under 4 KiB in its own buffer and writes it after the body
    ends: the kernel's count then shows less than was counted, and a client that
    acknowledged that much has not got the image."""
    connection = ScriptedConnection()
    report = Report(notifier, BODY, dict(FIELDS), connection)  # type: ignore[arg-type]
    connection.write(HEAD + BODY - 200)  # the server keeps the last 200 bytes back
    connection.ack()
    report.finish(BODY, True)
    assert sends(notifier) == []  # everything given is acknowledged: not enough
    connection.write(200)  # the server writes its tail
    connection.ack()
    assert settler().settled(timeout=10)
    assert sends(notifier) == [("INFO", BODY)]


def test_a_body_the_server_kept_and_never_sent_is_an_error(notifier: Notifier) -> None:
    connection = ScriptedConnection()
    report = Report(notifier, BODY, dict(FIELDS), connection)  # type: ignore[arg-type]
    connection.write(HEAD + BODY - 200)
    connection.ack()
    report.finish(BODY, True)
    connection.ack(alive=False)  # the client left before the tail was written
    assert settler().settled(timeout=10)
    [(priority, counted)] = sends(notifier)
    # The head's size cannot be told from a body not all given: it counts as body.
    assert priority == "ERROR" and BODY - 200 <= counted <= BODY - 200 + HEAD


def test_the_exit_hook_waits_up_to_the_ten_seconds_readme_says() -> None:
    wait = inspect.signature(Settler.report_held).parameters["wait"].default
    assert wait == _settling.EXIT_WAIT == 10.0


def test_at_exit_held_responses_get_a_moment_to_settle(notifier: Notifier) -> None:
    """A worker recycled after its last response (gunicorn's max_requests): the kernel
    still delivers the tail, and a complete download must not be reported cut short."""
    connection = ScriptedConnection()
    respond(notifier, connection).finish(BODY, True)
    threading.Timer(0.3, connection.ack).start()  # the client reads the rest meanwhile
    settler().report_held(wait=10)
    assert sends(notifier) == [("INFO", BODY)]
