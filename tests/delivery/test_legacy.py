"""The import of an earlier version's SQLite outbox: unreadable rows, a crash half-way."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from instrument.delivery import Delivery
from instrument.delivery._legacy import upgrade
from tests.support.old_outbox import old_outbox

from .test_engine import ScriptedPublisher, make


def test_unreadable_rows_are_logged_as_lost_the_rest_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox"
    notes = make(5)
    old_outbox(path, {"box": notes})
    with sqlite3.connect(path) as db:
        db.execute("UPDATE outbox SET body = 'not json' WHERE id = 2")
    publisher = ScriptedPublisher()
    with caplog.at_level(logging.WARNING, "instrument.delivery"):
        delivery = Delivery(lambda: publisher, name="box", outbox_path=str(path))
    try:
        assert delivery.flush(10)
    finally:
        delivery.close()
    assert publisher.sent == [note.message_id for note in notes if note is not notes[1]]
    assert "1 unreadable rows could not be imported (lost)" in caplog.text
    assert path.is_dir() and not list((path / "box").iterdir())  # delivered and removed


def test_a_crash_after_the_file_was_removed_is_finished_by_the_next_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox"
    notes = make(3)
    old_outbox(path, {"box": notes})
    staging = tmp_path / "outbox.upgrading"
    upgrade(str(path))  # then pretend it crashed before moving the journals in place
    (journal,) = (path / "box").iterdir()
    staging.mkdir()
    (staging / "box").mkdir()
    journal.rename(staging / "box" / journal.name)
    (path / "box").rmdir()
    path.rmdir()
    publisher = ScriptedPublisher()
    delivery = Delivery(lambda: publisher, name="box", outbox_path=str(path))
    try:
        assert delivery.flush(10)
    finally:
        delivery.close()
    assert publisher.sent == [note.message_id for note in notes]
    assert sorted(os.listdir(tmp_path)) == ["outbox"]
