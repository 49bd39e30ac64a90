"""The SQLite outbox on its own: rows, owners and adoption, and the fork lock."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from instrument.delivery import _outbox
from instrument.delivery._outbox import Outbox
from instrument.delivery._owner import process_owner


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "outbox.sqlite")


@pytest.fixture
def box(path: str) -> Iterator[Outbox]:
    outbox = Outbox(path, "box")
    yield outbox
    outbox.close()


def _rows(path: str) -> list[tuple[str, str]]:
    """Every row in the file, as ``(owner, body)``, read through a connection of its own."""
    with sqlite3.connect(path) as db:
        return [(str(o), str(b)) for o, b in db.execute("SELECT owner, body FROM outbox")]


def _owned_by(path: str, owner: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE outbox SET owner = ?", (owner,))


def test_rows_are_kept_until_deleted(box: Outbox, path: str) -> None:
    box.add(["a", "b", "c"])
    first = box.load(10)
    assert [body for _, body in first] == ["a", "b", "c"]
    assert box.load(10) == first  # loading is not consuming: not confirmed yet
    assert len(_rows(path)) == 3  # committed: another connection sees them
    box.delete([first[0][0], first[2][0]])  # a and c confirmed
    assert [body for _, body in box.load(10)] == ["b"]
    assert [body for _, body in _rows(path)] == ["b"]


def test_load_takes_the_oldest_rows_of_its_own_channel_and_owner(box: Outbox, path: str) -> None:
    other = Outbox(path, "other-channel")
    try:
        other.add(["theirs"])
        box.add([str(i) for i in range(5)])
        assert [body for _, body in box.load(2)] == ["0", "1"]
        assert [body for _, body in other.load(10)] == ["theirs"]
    finally:
        other.close()


def test_rows_of_a_dead_process_are_adopted(box: Outbox, path: str) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = process_owner(gone.pid)  # read while it may still run: a real start time
    gone.wait()
    writer = Outbox(path, "box")
    writer.add(["x", "y"])
    writer.close()
    _owned_by(path, owner)
    adopted = box.adopt()
    assert sorted(body for _, body in box.load(10)) == ["x", "y"]
    assert sorted(adopted) == sorted(row_id for row_id, _ in box.load(10))
    assert {o for o, _ in _rows(path)} == {box.owner}
    assert box.adopt() == []  # nothing left to adopt


def test_rows_of_a_live_process_are_not_adopted(box: Outbox, path: str) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        writer = Outbox(path, "box")
        writer.add(["x"])
        writer.close()
        _owned_by(path, process_owner(live.pid))
        assert box.adopt() == []
        assert box.load(10) == []
        assert {o for o, _ in _rows(path)} == {process_owner(live.pid)}
    finally:
        live.kill()
        live.wait()
    assert len(box.adopt()) == 1  # once it is gone, they are


def test_rows_of_an_open_engine_of_this_process_are_not_adopted_until_it_closes(
    box: Outbox, path: str
) -> None:
    first = Outbox(path, "box")
    first.add(["mine"])
    assert box.adopt() == []
    assert [body for _, body in first.load(10)] == ["mine"]
    first.close()
    assert len(box.adopt()) == 1
    assert [body for _, body in box.load(10)] == ["mine"]


def test_the_fork_lock_waits_for_an_outbox_call_but_only_so_long(
    box: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_outbox, "FORK_WAIT", 0.2)
    box.add(["a"])
    inside, may_end = threading.Event(), threading.Event()

    def progress() -> int:  # runs in the middle of an SQLite statement
        if not inside.is_set():
            inside.set()
            may_end.wait(10)
        return 0

    box.db.set_progress_handler(progress, 1)
    call = threading.Thread(target=box.load, args=(10,))
    call.start()
    try:
        assert inside.wait(10)
        started = time.monotonic()
        assert _outbox.hold_for_fork() is False  # gives up: the fork goes ahead
        waited = time.monotonic() - started
        assert 0.15 <= waited < 2.0, waited
        _outbox.release_after_fork()  # not held by this thread: nothing to release
    finally:
        may_end.set()
        call.join(10)
    box.db.set_progress_handler(None, 1)
    assert _outbox.hold_for_fork() is True  # no call under way: held at once
    later = threading.Thread(target=box.load, args=(10,))
    try:
        later.start()
        later.join(0.2)
        assert later.is_alive(), "an outbox call ran while a fork held the lock"
    finally:
        _outbox.release_after_fork()
    later.join(10)
    assert not later.is_alive()


def test_the_child_gets_a_released_fork_lock(box: Outbox) -> None:
    assert _outbox.hold_for_fork() is True
    try:
        _outbox.reset_after_fork()  # as in a child forked while the lock was held
        done = threading.Thread(target=box.add, args=(["a"],))
        done.start()
        done.join(10)
        assert not done.is_alive()
    finally:
        _outbox.release_after_fork()  # the holder id was reset: a no-op
    assert [body for _, body in box.load(10)] == ["a"]
