"""The outbox under disk stress, against a real RabbitMQ node: a full filesystem, a
read-only one, a corrupt segment.

In every case emit() returns at once and never raises; what the journal cannot keep
is counted (``unkept``: in memory only; ``damaged``: unreadable on disk) and logged;
once the disk has room (or is writable) again the outbox takes notifications again,
and everything that was not damaged is delivered. The filesystems are small tmpfs
mounts (segments shrunk to 256 KiB to match); without the right to mount, the tests
skip with the reason printed (fail in CI).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from instrument.delivery import _outbox
from instrument.events import Notification
from instrument.strategies.rabbit import RabbitStrategy
from tests.support.consume import consume, ids
from tests.support.rabbitmq import free_port
from tests.support.rabbitmq_fixtures import in_ci
from tests.support.waiting import wait_until

pytest.importorskip("kombu")

if TYPE_CHECKING:
    from tests.support.rabbitmq import RabbitNode

pytest_plugins = ["tests.support.rabbitmq_fixtures"]
pytestmark = pytest.mark.broker


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        reason = f"cannot mount ({' '.join(args)}): {done.stderr.strip()}"
        if in_ci():
            pytest.fail(reason)
        print(f"\nSKIPPING: {reason}")
        pytest.skip(reason)


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 4 MiB tmpfs (unmounted afterwards); journal segments of 256 KiB."""
    monkeypatch.setattr(_outbox, "SEGMENT_BYTES", 256 * 1024)
    mount = tmp_path / "disk"
    mount.mkdir()
    _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount))
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"rabbit_notification_exchange": f"disk-{tag}", "rabbit_notification_topic": f"d-{tag}"}


def _strategy(url: str, outbox: Path, names: dict[str, str], **options: Any) -> RabbitStrategy:
    return RabbitStrategy(transport_url=url, outbox_path=str(outbox), **names, **options)


def _emit(strategy: RabbitStrategy, n: int) -> list[str]:
    """Emit *n*; each returns at once and never raises."""
    notes = [
        Notification.create("image.send", "INFO", {"i": i, "pad": "x" * 300}) for i in range(n)
    ]
    for note in notes:
        started = time.monotonic()
        strategy.emit(note)
        assert time.monotonic() - started < 3.0, "emit() blocked"
    return [note.message_id for note in notes]


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem is full."""
    filler = directory / "filler"
    with open(filler, "wb") as file, contextlib.suppress(OSError):
        while True:
            file.write(b"\0" * 65536)
            file.flush()
    return filler


def _received(url: str, names: dict[str, str], expect: int) -> set[str]:
    topic = names["rabbit_notification_topic"]
    return set(ids(consume(url, topic, expect=expect, timeout=60)))


def test_a_full_filesystem_keeps_in_memory_counted_then_comes_back(
    rabbit_node: RabbitNode, disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = _names()
    strategy = _strategy(rabbit_node.url, disk / "outbox", names)
    sent: list[str] = []
    try:
        with caplog.at_level(logging.WARNING, "instrument.delivery"):
            sent += _emit(strategy, 100)
            filler = _fill(disk)
            sent += _emit(strategy, 4000)  # ~1.5 MB: past every segment allocated
            stats = strategy.stats()
            assert stats["unkept"] > 0 and stats["outbox_error"], stats
            assert "cannot take notifications" in caplog.text
            filler.unlink()  # room again
            wait_until(lambda: strategy.stats()["outbox_error"] is None, 15.0, pause=0.05)
            assert "takes notifications again" in caplog.text
            before = strategy.stats()
            sent += _emit(strategy, 100)
            after = strategy.stats()
            assert after["stored"] == before["stored"] + 100, after
            assert after["unkept"] == before["unkept"], after
        assert strategy.flush(60)
    finally:
        strategy.close()
    stats = strategy.stats()
    assert stats["dropped"] == 0 and stats["damaged"] == 0, stats
    assert _received(rabbit_node.url, names, len(sent)) >= set(sent)


def test_a_read_only_filesystem_keeps_in_memory_counted_then_comes_back(
    rabbit_node: RabbitNode, disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    view = tmp_path / "view"
    view.mkdir()
    _mount("--bind", str(disk), str(view))
    try:
        _mount("-o", "remount,ro,bind", str(view))
        names = _names()
        strategy = _strategy(rabbit_node.url, view / "outbox", names)
        sent: list[str] = []
        try:
            with caplog.at_level(logging.WARNING, "instrument.delivery"):
                sent += _emit(strategy, 500)
                stats = strategy.stats()
                assert stats["unkept"] == 500 and stats["stored"] == 0, stats
                assert "Read-only file system" in str(stats["outbox_error"])
                _mount("-o", "remount,rw,bind", str(view))
                wait_until(lambda: strategy.stats()["outbox_error"] is None, 15.0, pause=0.05)
                sent += _emit(strategy, 100)
                assert strategy.stats()["stored"] >= 100
            assert strategy.flush(60)
        finally:
            strategy.close()
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)
    stats = strategy.stats()
    assert stats["dropped"] == 0 and stats["unkept"] == 500, stats
    assert _received(rabbit_node.url, names, len(sent)) >= set(sent)


def test_a_corrupt_segment_loses_only_the_damaged_record_counted_and_logged(
    rabbit_node: RabbitNode, disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead, names = f"amqp://guest:guest@127.0.0.1:{free_port()}//", _names()
    first = _strategy(dead, disk / "outbox", names, close_timeout=0.2)
    sent = _emit(first, 300)  # the broker down: all stay in the journal
    first.close()
    (journal,) = (disk / "outbox" / "rabbit").iterdir()
    segment = min(journal.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    third = data.index(b"\n", data.index(b"\n") + 1) + 1
    data[third + 20] ^= 0x01  # one bit of the third record's body
    segment.write_bytes(bytes(data))
    second = _strategy(rabbit_node.url, disk / "outbox", names)
    try:
        with caplog.at_level(logging.ERROR, "instrument.delivery"):
            more = _emit(second, 50)  # the request path meanwhile
            assert second.flush(60)
        stats = second.stats()
        assert stats["damaged"] == 1 and stats["adopted"] == 300, stats
        assert "1 damaged records" in caplog.text
    finally:
        second.close()
    received = _received(rabbit_node.url, names, len(sent) + len(more) - 1)
    assert set(sent) - received == {sent[2]}
    assert received >= set(more)


def test_the_fixture_mounts_a_small_filesystem(disk: Path) -> None:
    stat = os.statvfs(disk)
    assert stat.f_blocks * stat.f_frsize <= 4 * 1024 * 1024
    with pytest.raises(OSError) as error:
        _fill(disk).write_bytes(b"\0" * 8 * 1024 * 1024)
    assert error.value.errno == errno.ENOSPC
