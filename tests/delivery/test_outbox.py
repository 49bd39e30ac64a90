"""The journal on its own: records kept until acknowledged, locks, adoption, damage."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from instrument.delivery._adoption import adoptable
from instrument.delivery._outbox import Outbox, decode, encode
from instrument.delivery._segments import Cursor, frame, segment_name
from instrument.events import Notification

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    outbox = Outbox(str(tmp_path / "outbox"), "box")
    outbox.open()
    yield outbox
    outbox.close(confirmed=0)


def _bodies(records: list[bytes | None]) -> list[str]:
    return [(body or b"<damaged>").decode() for body in records]


def test_records_are_read_in_order_and_kept_until_acknowledged(box: Outbox) -> None:
    assert all(box.append(body) for body in (b'"a"', b'"b"', b'"c"'))
    assert box.cursor is not None
    records, end = box.cursor.read(2)
    assert _bodies(records) == ['"a"', '"b"']
    box.cursor.ack(end)
    again = Cursor(box.directory, final=True)  # as the next process sees it
    assert _bodies(again.read(10)[0]) == ['"c"']
    again.close()


def test_files_are_private(box: Outbox) -> None:
    box.append(b"1")
    for path in Path(box.root).rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_a_live_journal_is_not_adoptable_a_closed_one_is(box: Outbox) -> None:
    other = Outbox(box.root, "box")
    other.open()
    other.append(b"1")
    assert adoptable(box.root, "box", {box.directory}) == []
    other.close(confirmed=0)
    found = adoptable(box.root, "box", {box.directory})
    assert [journal.pending for journal in found] == [1]
    assert adoptable(box.root, "box", {box.directory}) == []  # we hold it now
    found[0].finish()
    assert not os.path.exists(other.directory)


def test_the_journal_of_a_killed_process_is_adoptable(box: Outbox) -> None:
    code = f"""
        import os, signal
        from instrument.delivery._outbox import Outbox
        box = Outbox({box.root!r}, "box")
        box.open()
        for i in range(100):
            box.append(b"%d" % i)
        os.kill(os.getpid(), signal.SIGKILL)
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, check=False)
    (journal,) = adoptable(box.root, "box", {box.directory})
    assert journal.pending == 100
    assert _bodies(journal.cursor.read(1000)[0]) == [str(i) for i in range(100)]
    journal.release()


def test_damaged_and_torn_records_are_reported_and_skipped(box: Outbox) -> None:
    for body in (b"1", b"2", b"3"):
        box.append(body)
    segment = os.path.join(box.directory, segment_name(1))
    with open(segment, "r+b") as file:  # corrupt the second record's body
        file.seek(len(b"00000000 1\n") + 9)
        file.write(b"x")
    with open(segment, "r+b") as file:  # and a record cut short at the end
        file.seek(3 * len(b"00000000 1\n"))
        file.write(b"0123")
    box.close(confirmed=0)
    (journal,) = adoptable(box.root, "box", set())
    assert journal.pending == 4
    assert _bodies(journal.cursor.read(10)[0]) == ["1", "<damaged>", "3", "<damaged>"]
    assert journal.cursor.exhausted
    journal.finish()


def test_a_full_segment_is_followed_by_the_next(
    box: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from instrument.delivery import _outbox

    monkeypatch.setattr(_outbox, "SEGMENT_BYTES", 100)
    box.close(confirmed=0)
    box = Outbox(box.root, "box")
    box.open()  # segments of 100 bytes: 2 records each
    bodies = [b'"%030d"' % i for i in range(10)]
    for body in bodies:
        assert box.append(body)
        box.prepare()  # the worker allocates the next one ahead
    assert box.cursor is not None
    records, end = box.cursor.read(100)
    assert [body for body in records] == bodies
    box.cursor.ack(end)
    # lock, ack, the segment being written, the next two allocated ahead
    assert len(os.listdir(box.directory)) == 5
    box.close(confirmed=10)
    assert not os.path.exists(box.directory)


def test_bodies_round_trip_and_odd_payloads_still_encode() -> None:
    odd = Notification.create("image.create", "INFO", {"name": "\ud800", "n": float("nan")})
    for note in (Notification.create("image.send", "INFO", {"a": [1, 2]}), odd):
        again = decode(encode(note))
        assert again is not None and again.message_id == note.message_id
    assert decode(b"{not json") is None


def test_a_burst_the_worker_cannot_keep_up_with_allocates_in_the_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker is stuck in a publish (it allocates nothing): 3,000 emits spanning
    many segments are all journaled, none kept in memory only, none dropped; a segment
    the worker allocated late (behind the one written) is passed over, read in order."""
    from instrument.delivery import Delivery, _outbox

    from .test_engine import ScriptedPublisher, make

    monkeypatch.setattr(_outbox, "SEGMENT_BYTES", 64 * 1024)  # ~150 records each
    publisher = ScriptedPublisher()
    publisher.hold.clear()  # the first publish blocks until released
    delivery = Delivery(lambda: publisher, name="box", outbox_path=str(tmp_path), queue_size=10)
    notes = make(3000)
    try:
        assert delivery.submit(notes[0])
        while not publisher.attempt_times:
            time.sleep(0.01)  # the worker is inside publish_batch, blocked
        box = delivery._outbox
        assert box is not None
        for note in notes[1:]:
            assert delivery.submit(note)
        late = make(300)
        real_fsync_dir = _outbox.fsync_dir

        def requests_meanwhile(directory: str) -> None:  # between allocation and lock
            monkeypatch.setattr(_outbox, "fsync_dir", real_fsync_dir)
            assert all(delivery.submit(note) for note in late)  # they allocate past it

        monkeypatch.setattr(_outbox, "fsync_dir", requests_meanwhile)
        written = box._seq
        box.prepare()  # as the worker would: its first segment comes out stale
        assert box._seq > written + 1 and os.path.exists(f"{box.directory}/{written + 1:012d}.seg")
        stats = delivery.stats()
        assert stats["stored"] == 3300 and stats["unkept"] == stats["overflow"] == 0, stats
        publisher.hold.set()
        assert delivery.flush(30)
    finally:
        publisher.hold.set()
        delivery.close()
    assert publisher.sent == [note.message_id for note in notes + late]
    assert delivery.stats()["damaged"] == 0


def test_records_appended_while_the_reader_crosses_a_rotation_are_read(tmp_path: Path) -> None:
    """The reader read segment 0 up to the writer's end; before it moved on, the writer
    appended one more record there and started segment 1. That record is read next."""
    first = tmp_path / segment_name(0)
    first.write_bytes(frame(b'"a"') + frame(b'"b"'))
    (tmp_path / segment_name(1)).write_bytes(b"")
    looks = iter([(0, first.stat().st_size)])

    def live() -> tuple[int, int]:
        found = next(looks, None)
        if found is not None:
            return found
        return 1, 0  # the writer has moved on to segment 1

    cursor = Cursor(str(tmp_path), final=False, live=live)
    records, _ = cursor.read(10)
    with first.open("ab") as segment:  # appended after the reader's look, before it moved
        segment.write(frame(b'"c"'))
    records += cursor.read(10)[0]
    records += cursor.read(10)[0]
    assert _bodies(records) == ['"a"', '"b"', '"c"']
    cursor.close()
