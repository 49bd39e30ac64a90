"""The outbox comes back: a journal whose files are deleted under a running engine."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from instrument.delivery import Delivery, _outbox
from instrument.events import Notification
from tests.support.waiting import wait_until

from .test_engine import ScriptedPublisher, make


def test_a_journal_deleted_under_a_running_engine_comes_back_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """Deleted while a batch of it is in flight (the broker down): the new journal takes
    what the old files still hold, the batch in flight is sent from there, and flush()
    returns only once every notification was confirmed; counted once each."""
    outbox = tmp_path / "outbox"
    delivery, publisher = _engine(outbox)  # the broker is down throughout the deletion
    notes = make(100)
    try:
        for note in notes[:50]:
            assert delivery.submit(note)
        wait_until(lambda: len(publisher.attempt_times) >= 2, 5.0)  # a batch of them in flight
        old = next((outbox / "box").iterdir())
        shutil.rmtree(outbox)  # deleted under the running process
        for note in notes[50:]:
            assert delivery.submit(note)  # never fails, never raises
        wait_until(lambda: any(j.glob("*.seg") for j in _journals(outbox) if j != old), 5.0)
        publisher.failing = 0
        assert delivery.flush(10)
        assert set(publisher.sent) >= {note.message_id for note in notes}  # not before
        stats = delivery.stats()
        assert stats["outbox"] == 0 and stats["queued"] == 0, stats
    finally:
        delivery.close()
    stats = delivery.stats()
    assert stats["dropped"] == 0 and stats["damaged"] == 0, stats
    assert stats["stored"] + stats["unkept"] == 100, stats
    assert _journals(outbox) == [], "all confirmed: the journal is removed at close"


def _journals(outbox: Path) -> list[Path]:
    box = outbox / "box"
    return sorted(box.iterdir()) if box.is_dir() else []


def _engine(outbox: Path) -> tuple[Delivery, ScriptedPublisher]:
    """An engine with a journal at *outbox* whose broker is down."""
    publisher = ScriptedPublisher()
    publisher.failing = -1
    delivery = Delivery(
        lambda: publisher,
        name="box",
        outbox_path=str(outbox),
        outbox_fsync_interval=0.05,
        retry_backoff=0.01,
        retry_max_backoff=0.05,
    )
    return delivery, publisher


def _backlog(outbox: Path, count: int, pad: int) -> tuple[Delivery, ScriptedPublisher, list[Any]]:
    """An engine whose broker is down, with *count* notifications in its journal."""
    delivery, publisher = _engine(outbox)
    notes = [
        Notification.create("image.send", "INFO", {"i": i, "pad": "x" * pad}) for i in range(count)
    ]
    for note in notes:
        assert delivery.submit(note)
    wait_until(lambda: delivery.stats()["stored"] == count, 30.0)
    return delivery, publisher, notes


def _deleted_and_back(outbox: Path, delivery: Delivery) -> None:
    """Delete the journal; return once the worker made a new one."""
    old = next((outbox / "box").iterdir())
    time.sleep(0.3)  # some fsync rounds: full segments are closed by the writer
    shutil.rmtree(old)
    wait_until(lambda: any(j.glob("*.seg") for j in _journals(outbox) if j != old), 10.0)


def test_a_deleted_journal_keeps_a_backlog_of_many_segments(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    delivery, publisher, notes = _backlog(outbox, 800, 50_000)  # about 10 segments
    try:
        _deleted_and_back(outbox, delivery)
        publisher.failing = 0
        assert delivery.flush(30)
        assert set(publisher.sent) >= {note.message_id for note in notes}
    finally:
        delivery.close()
    stats = delivery.stats()
    assert stats["damaged"] == 0 and stats["dropped"] == 0, stats


def test_segments_past_the_held_limit_are_counted_lost_with_a_deleted_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_outbox, "_HELD_MAX", 2)
    outbox = tmp_path / "outbox"
    delivery, publisher, notes = _backlog(outbox, 800, 50_000)
    try:
        _deleted_and_back(outbox, delivery)
        publisher.failing = 0
        wait_until(lambda: delivery.stats()["queued"] == 0, 30.0)
    finally:
        delivery.close()
    stats = delivery.stats()
    delivered = set(publisher.sent) & {note.message_id for note in notes}
    assert stats["damaged"] > 0 and len(delivered) + stats["damaged"] == 800, stats
    assert "were lost with its files" in caplog.text


def test_a_deleted_journal_that_cannot_be_made_again_at_once_loses_nothing(
    tmp_path: Path,
) -> None:
    outbox = tmp_path / "outbox"
    delivery, publisher, notes = _backlog(outbox, 50, 0)
    try:
        shutil.rmtree(outbox / "box")
        (outbox / "box").write_text("")  # in the way for a while (a full disk, in life)
        wait_until(lambda: delivery.stats()["outbox_error"] is not None, 10.0)
        (outbox / "box").unlink()
        wait_until(lambda: _journals(outbox), 10.0)
        publisher.failing = 0
        assert delivery.flush(30)
        assert set(publisher.sent) >= {note.message_id for note in notes}
    finally:
        delivery.close()
    assert delivery.stats()["damaged"] == 0


def test_a_journal_half_made_again_is_made_again_with_the_old_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first segment of the new journal fails (no room), then there is room."""
    box = _outbox.Outbox(str(tmp_path), "rabbit")
    box.open()
    for number in range(5):
        assert box.append(b'{"n": %d}' % number)
    shutil.rmtree(box.directory)
    assert not box.check()
    real, failures = _outbox._Segment, [1]

    def segment(directory: str, seq: int) -> Any:
        if failures:
            failures.pop()
            raise OSError(28, "No space left on device")
        return real(directory, seq)

    monkeypatch.setattr(_outbox, "_Segment", segment)
    with pytest.raises(OSError):
        box.resume()
    assert box.cursor is None  # so the worker resumes again, not just allocates
    assert box.resume() == 0
    assert box.cursor is not None
    records, _ = box.cursor.read(100)
    assert len([record for record in records if record]) == 5
    box.close(confirmed=0)
