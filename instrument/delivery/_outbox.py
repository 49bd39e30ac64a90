"""The durable outbox: one append-only journal per engine and process, locked while it lives.

Decisions:

* **emit() writes to the journal itself**: one framed record (:mod:`._segments`)
  copied into a segment file mapped ``MAP_SHARED``, under a lock held only for that
  copy. The mapping's pages are the file's page cache, which outlives a killed
  process; no fsync on the request path (the worker syncs what was written every
  ``outbox_fsync_interval`` seconds, so a host crash loses at most that window; by
  range, so that the pages ahead stay writable, :mod:`._pages`).
* **A memory copy, not ``write(2)``**: measured, a ``write(2)`` per emit kept p50 at
  2 us but released the GIL, and getting it back behind a busy worker thread made
  p99 100 us with the broker up; the copy keeps the GIL (p99 see benchmarks).
  Segments are allocated in full (``posix_fallocate``) by the worker, two ahead, so a
  full disk is an error (``ENOSPC``), never a ``SIGBUS`` in a request; with no segment
  ready (a burst outran the worker) the request allocates the next one itself, and
  only when that fails too are appends refused (the notification goes to memory,
  counted ``unkept``).
* **Segment files, not SQLite**: an SQLite commit without fsync costs tens of
  microseconds and a lock shared by every thread; reading back in order needs no
  index, a confirmed prefix is one offset, a finished segment one ``unlink``.
* **One journal per engine and process**, in ``<outbox_path>/<channel>/<owner>/``
  (``lock``, ``ack``, ``<seq>.seg``). The owner holds ``fcntl.flock`` on ``lock`` for
  the life of the journal; the kernel drops it when the process dies however it dies.
  A journal whose lock can be taken has no live owner: it is *adopted*
  (:mod:`._adoption`). A forked child
  closes its inherited descriptors (the lock stays with the parent's open file);
  ``O_CLOEXEC`` keeps exec'd programs from holding it.
* Files are created 0600, directories 0700.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import mmap
import os
import threading
from typing import Final

from ..events import Notification
from . import _owner
from ._adoption import lock_file
from ._pages import Pages
from ._segments import Cursor, frame, segment_name

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional
    orjson = None  # type: ignore[assignment]

__all__ = ["SEGMENT_BYTES", "Outbox", "decode", "encode", "fsync_dir", "private_dirs"]

SEGMENT_BYTES: Final = 4 * 1024 * 1024  # allocated in full, mapped, two kept ahead
_SPARES: Final = 2  # segments allocated ahead: a burst never waits for the worker
_AHEAD: Final = 256 * 1024  # bytes faulted in again after a sync, at least
#: Full segments whose files the reader keeps open until their records are confirmed,
#: so that a journal deleted under a running process still has them (4 MiB each: a
#: backlog of 512 MiB). Beyond, a deleted journal loses those segments, counted.
_HELD_MAX: Final = 128


def encode(notification: Notification) -> bytes:
    """The journal body of *notification*: its wire JSON as UTF-8 (never fails)."""
    return notification.to_bytes()


def decode(body: bytes | None) -> Notification | None:
    """The notification in a journal body; None when it is damaged."""
    if body is None:
        return None
    try:
        return Notification.from_dict(orjson.loads(body) if orjson else json.loads(body))
    except (ValueError, TypeError, KeyError):
        return None


def private_dirs(path: str) -> None:
    """Create *path* and every missing parent 0700 (``os.makedirs`` gives only the leaf
    its mode); directories that already exist keep theirs."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(directory, 0o700)


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Segment:
    """One segment file, allocated in full and mapped shared: appends are memory copies.

    Its pages are faulted in by the worker, not one by one in requests (10-40 us
    each), and synced by range (:mod:`._pages`).
    """

    __slots__ = ("fd", "map", "pages", "seq", "synced")

    def __init__(self, directory: str, seq: int) -> None:
        path = os.path.join(directory, segment_name(seq))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, SEGMENT_BYTES)  # ENOSPC here, never a SIGBUS later
            self.map = mmap.mmap(fd, SEGMENT_BYTES)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self.pages = Pages(self.map, fd)
        self.pages.populate_new()  # system calls that report, never raise
        self.fd, self.seq, self.synced = fd, seq, 0

    def sync(self, end: int) -> None:
        """Worker: make the records before *end* durable; fault the next pages in again
        (the sync write-protected the one *end* is on, the kernel's writeback may have
        cleaned more): twice what came since the last sync, at least :data:`_AHEAD`."""
        if end <= self.synced:
            return  # nothing new: no disk flush for an idle journal
        self.pages.sync(self.synced, end)
        ahead = max(_AHEAD, 2 * (end - self.synced))
        self.synced = end
        self.pages.populate(end, end + ahead)

    def close(self, *, sync: bool) -> None:
        if sync:
            with contextlib.suppress(OSError):
                os.fsync(self.fd)
        self.pages.release()
        self.map.close()
        os.close(self.fd)


class Outbox:
    """This engine's journal: request threads append, the worker reads, syncs, allocates."""

    def __init__(self, root: str, channel: str) -> None:
        self.root = root
        self.channel = channel
        self.directory = os.path.join(root, channel, _owner.engine_owner())
        self.cursor: Cursor | None = None
        self.appended = 0  # records emit() wrote (under the lock)
        self.absorbed = 0  # records the worker moved here from memory (under the lock)
        self.error: str | None = None  # why the journal is not writable, None when it is
        self._lock = threading.Lock()
        self._current: _Segment | None = None  # appends go here; None while refused
        self._size = 0  # bytes of complete records in the current segment
        self._spares: list[_Segment] = []  # the next ones, allocated ahead by the worker
        self._retired: list[_Segment] = []  # full ones, closed by the worker
        self._lock_fd = -1
        self._seq = 0  # the segment being written
        self._reserved = 0  # the last segment number handed out for allocation
        self._records = 0  # records written to this journal (under the lock)
        self._starts: dict[int, int] = {}  # segment -> records written before it
        self._orphan: Cursor | None = None  # a deleted journal not yet moved to a new one

    def open(self) -> None:
        """Create the journal (directory, lock, first segment); raise OSError if impossible."""
        private_dirs(self.directory)
        self._lock_fd = lock_file(self.directory, create=True)
        self.cursor = Cursor(self.directory, final=False, live=self.live)
        with self._lock:
            self._spares = [_Segment(self.directory, self._reserve())]
            self._switch()
        self.error = None

    @property
    def writable(self) -> bool:
        return self._current is not None

    def live(self) -> tuple[int, int]:
        """The segment being written and the end of its complete records (for the reader)."""
        with self._lock:
            return self._seq, self._size

    def append(self, body: bytes) -> bool:
        """Copy one record into the mapped segment (the request path; no system call, the
        GIL kept); False when it is not in the journal."""
        record = frame(body)
        with self._lock:
            if not self._put(record):
                return False
            self.appended += 1
            return True

    def take_over(self, body: bytes, *, absorbed: bool) -> bool:
        """Worker: write a record accepted earlier (from memory when *absorbed*, else from
        a deleted journal); counted with the write, under the same lock, so that
        ``appended`` (what emit() journaled) is never off, not even for an instant."""
        record = frame(body)
        with self._lock:
            if not self._put(record):
                return False
            self.absorbed += absorbed
            return True

    def _put(self, record: bytes) -> bool:
        """Lock held: copy *record* into the current segment (rotating when full)."""
        segment, start = self._current, self._size
        if segment is None:
            return False
        if start + len(record) > SEGMENT_BYTES:
            if not self._switch():
                return False
            segment, start = self._current, 0
            assert segment is not None
        segment.map[start : start + len(record)] = record
        self._size = start + len(record)
        self._records += 1
        return True

    def _switch(self) -> bool:
        """Lock held: the spare segment becomes the current one; False (refused) if none.

        With no spare ready (a burst outran the worker, or the worker is stuck on a
        broker) the caller allocates the next segment itself: a few milliseconds once
        per segment, instead of turning notifications away while the disk has room.
        A refusal (disk full) is cheap from then on: the worker retries every second.
        """
        if self._current is not None:
            self._retired.append(self._current)
        if not self._spares and self.cursor is not None:
            try:
                self._spares.append(_Segment(self.directory, self._reserve()))
            except OSError as exc:
                self.error = str(exc)
        self._current = self._spares.pop(0) if self._spares else None
        if self._current is None:
            self.error = self.error or "no space for the next journal segment"
            return False
        self._seq, self._size = self._current.seq, 0
        self._starts[self._seq] = self._records
        return True

    def _reserve(self) -> int:
        """Lock held: the number of the next segment to allocate (worker or request)."""
        self._reserved = max(self._seq, self._reserved) + 1
        return self._reserved

    def prepare(self) -> None:
        """Worker: allocate the next segment ahead, close full ones; OSError when it cannot.

        Allocated outside the lock (appends go on meanwhile). A request that needed a
        segment meanwhile allocated the next number itself: ours is then behind the
        one being written and stays an empty file, which the reader passes over.
        """
        while len(self._spares) < _SPARES and self.cursor is not None:
            with self._lock:
                seq = self._reserve()
            spare = _Segment(self.directory, seq)
            fsync_dir(self.directory)
            with self._lock:
                stale = seq <= self._seq
                if not stale:
                    self._spares.append(spare)
                if self._current is None and self.intact():
                    self._switch()
                    self.error = None
            if stale:
                spare.close(sync=False)

    def _take_retired(self) -> list[_Segment]:
        with self._lock:
            retired, self._retired = self._retired, []
        return retired

    def resume(self) -> int:
        """Worker: after the journal's files were deleted, a new journal takes over what
        the old one still holds (its open files) and every append from now on. Returns
        how many records are lost (no room in the new journal, or a full segment whose
        file was not kept open); the caller counts and logs them. If the new journal
        cannot be made (OSError), the old one's records wait for the next try."""
        old = self.cursor if self.cursor is not None else self._orphan
        self.cursor, self._orphan = None, old
        for segment in self._retired:
            if old is not None:
                old.hold(segment.seq, segment.fd)
        for spare in self._spares:  # empty files of the deleted directory
            spare.close(sync=False)
        self._spares = []
        self._close_files()
        self.directory = os.path.join(self.root, self.channel, _owner.engine_owner())
        try:
            self.open()
        except BaseException:
            self._close_files()  # half made: the next try starts over, the orphan kept
            raise
        self._orphan = None
        if old is None:
            return 0
        lost = self._unheld(old)
        first = self._seq  # the new journal's: the deleted one's counts are done with
        self._starts = {seq: count for seq, count in self._starts.items() if seq >= first}
        return lost + self._move(old)

    def _unheld(self, old: Cursor) -> int:
        """Records of the deleted journal in full segments whose files were not kept."""
        lost = 0
        ends = sorted(self._starts)
        for seq, following in itertools.pairwise(ends):
            if seq >= old.acked.seq and not old.holds(seq):
                lost += self._starts[following] - self._starts[seq]
        return lost

    def _keep_readable(self, segment: _Segment) -> None:
        """Worker: the reader keeps a full segment's file open until its records are
        confirmed (see :data:`_HELD_MAX`)."""
        cursor = self.cursor
        if cursor is None or segment.seq < cursor.acked.seq:
            return
        if cursor.holding() < _HELD_MAX:
            cursor.hold(segment.seq, segment.fd)

    def _move(self, old: Cursor) -> int:
        """Rewrite what a deleted journal still holds into this one, counted once (where
        it was first written); how many found no room."""
        old.rewind()
        lost = 0
        while records := old.read(1000)[0]:
            for body in filter(None, records):
                if not self.take_over(body, absorbed=False):
                    with contextlib.suppress(OSError):
                        self.prepare()  # more segments, then once more
                    lost += not self.take_over(body, absorbed=False)
        old.close()
        return lost

    def intact(self) -> bool:
        """Whether our lock file is still the one in the directory (not deleted)."""
        try:
            return (
                os.stat(os.path.join(self.directory, "lock")).st_ino
                == os.fstat(self._lock_fd).st_ino
            )
        except OSError:
            return False

    def check(self) -> bool:
        """Worker: False (appends refused) when the journal's files were deleted."""
        if self.cursor is None:
            return False  # never opened
        if self.intact():
            return True
        with self._lock:
            if self._current is not None:
                self._retired.append(self._current)
            self._current = None
        self.error = f"the journal {self.directory} was deleted"
        return False

    def sync(self) -> None:
        """Worker: make what was appended and acknowledged durable (fsync)."""
        for retired in self._take_retired():
            self._keep_readable(retired)
            retired.close(sync=True)
        if self.cursor is not None:  # segments confirmed: their counts are not needed
            acked = self.cursor.acked.seq
            for seq in [seq for seq in self._starts if seq < acked]:
                del self._starts[seq]
        with self._lock:
            segment, end = self._current, self._size
        if segment is not None:
            segment.sync(end)
        if self.cursor is not None:
            self.cursor.fsync()

    def close(self, *, confirmed: int) -> None:
        """Stop appends; remove the journal if all was *confirmed*, else leave it for adoption."""
        with self._lock:
            segments = [*self._retired, *self._spares, *filter(None, [self._current])]
            self._current, self._spares, self._retired = None, [], []
            empty = self.appended + self.absorbed <= confirmed
        for segment in segments:
            segment.close(sync=not empty)
        if empty and self.cursor is not None and self.intact():
            self.cursor.remove()
            os.unlink(os.path.join(self.directory, "lock"))
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)
        if self._orphan is not None:  # a deleted journal never moved (no room since)
            self._orphan.close()
            self._orphan = None
        self._close_files()

    def _close_files(self) -> None:
        """Close what is open; the lock goes last (the journal is adoptable from then on)."""
        for segment in self._take_retired():
            segment.close(sync=False)
        if self.cursor is not None:
            self.cursor.close()
            self.cursor = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def abandon(self) -> None:
        """In a forked child: close the inherited descriptors (the parent keeps its lock).

        Without taking the journal's lock: a thread of the parent may have held it at
        ``fork()``, and the child's copy of it would then never be released.
        """
        self._lock = threading.Lock()
        inherited = [self._current, *self._spares, *self._retired]
        self._current, self._spares, self._retired = None, [], []
        for segment in inherited:
            if segment is not None:
                with contextlib.suppress(OSError, ValueError):
                    segment.close(sync=False)
        self._close_files()
