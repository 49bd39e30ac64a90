"""The outbox comes back: a journal whose files are deleted under a running engine."""

from __future__ import annotations

import shutil
from pathlib import Path

from instrument.delivery import Delivery
from tests.support.waiting import wait_until

from .test_engine import ScriptedPublisher, make


def test_a_journal_deleted_under_a_running_engine_comes_back_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """Deleted while a batch of it is in flight (the broker down): the new journal takes
    what the old files still hold, the batch in flight is sent from there, and flush()
    returns only once every notification was confirmed; counted once each."""
    outbox = tmp_path / "outbox"
    publisher = ScriptedPublisher()
    publisher.failing = -1  # the broker is down throughout the deletion
    delivery = Delivery(
        lambda: publisher,
        name="box",
        outbox_path=str(outbox),
        outbox_fsync_interval=0.05,
        retry_backoff=0.01,
        retry_max_backoff=0.05,
    )
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
