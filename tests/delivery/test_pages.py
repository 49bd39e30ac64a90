"""The journal's pages: a sync leaves the pages ahead writable, so appends stay copies."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import pytest

from instrument.delivery import _pages
from instrument.delivery._outbox import Outbox

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="msync/madvise by range: Linux")


def _page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _append_pages(box: Outbox, bodies: list[bytes]) -> int:
    """Append *bodies*; the page faults the appends took."""
    before = _page_faults()
    for body in bodies:
        assert box.append(body)
    return _page_faults() - before


@linux_only
def test_appends_after_a_sync_take_no_page_faults(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path), "pages")
    box.open()
    try:
        bodies = [b'"%s"' % (b"x" * 4090) for _ in range(64)]  # one page each
        _append_pages(box, bodies[:4])  # the allocator's first blocks
        box.sync()
        # A sync of the whole file write-protected every page it cleaned, the pages
        # allocated ahead too: each of these appends then faulted (64 here).
        faults = _append_pages(box, bodies)
        assert faults < 16, f"{faults} page faults in 64 appends after a sync"
        assert box.cursor is not None
        records, _ = box.cursor.read(100)
        assert records == bodies[:4] + bodies
    finally:
        box.close(confirmed=0)


def test_without_libc_the_file_is_synced_whole_and_pages_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pages, "_LIBC", None)
    synced: list[int] = []
    monkeypatch.setattr(_pages.os, "fsync", lambda fd: synced.append(fd))
    box = Outbox(str(tmp_path), "pages")
    box.open()
    try:
        assert box.append(b'"a"') and box.append(b'"b"')
        segment = box._current
        assert segment is not None
        box.sync()
        assert segment.fd in synced, "the segment was not synced"
        assert box.cursor is not None
        assert box.cursor.read(10)[0] == [b'"a"', b'"b"']
    finally:
        box.close(confirmed=0)
