"""The durable outbox: one append-only journal per engine and process, locked while it lives.

Decisions:

* **emit() writes to the journal itself**: one ``write(2)`` of one framed record
  (:mod:`._segments`) to a segment file opened ``O_APPEND``, under a lock held only for
  that call. When it returns the notification is in the operating system's page cache,
  which outlives a killed process; no fsync on the request path (the worker fsyncs
  every ``outbox_fsync_interval`` seconds, so a host crash loses at most that window).
  A short or failed write is cut back (``ftruncate``) so no torn record stays in the
  middle of a segment; the notification then goes to memory, counted (``unkept``).
* **Segment files, not SQLite**: an append is one system call (1-3 us) where an SQLite
  commit without fsync costs tens of microseconds and a lock shared by every thread;
  reading back in order needs no index, a confirmed prefix is one offset, a finished
  segment one ``unlink``.
* **One journal per engine and process**, in ``<outbox_path>/<channel>/<owner>/``
  (``lock``, ``ack``, ``<seq>.seg``). The owner holds ``fcntl.flock`` on ``lock`` for
  the life of the journal; the kernel drops it when the process dies however it dies.
  A journal whose lock can be taken has no live owner: it is *adopted* (its lock held
  by the adopter while it delivers it, then its directory is removed). A forked child
  closes its inherited descriptors (the lock stays with the parent's open file);
  ``O_CLOEXEC`` keeps exec'd programs from holding it.
* Files are created 0600, directories 0700.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from typing import Final

from ..events import MAX_NOTIFICATION_BYTES, Notification
from . import _owner
from ._segments import Cursor, frame, segment_name

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional
    orjson = None  # type: ignore[assignment]

__all__ = ["SEGMENT_BYTES", "Adopted", "Outbox", "adoptable", "decode", "encode"]

SEGMENT_BYTES: Final = 8 * 1024 * 1024  # the worker starts a new segment past this size
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


def encode(notification: Notification) -> bytes:
    """The journal body of *notification*: its wire JSON as UTF-8.

    orjson when it is installed (0.5 us instead of 4 us on the request path); whatever
    it refuses (a lone surrogate, a huge payload) goes through the never-failing
    :meth:`Notification.to_json`.
    """
    if orjson is not None:
        try:
            body = orjson.dumps(notification.to_dict())
        except TypeError:  # orjson.JSONEncodeError
            pass
        else:
            if len(body) <= MAX_NOTIFICATION_BYTES:
                return body
    return notification.to_json().encode()


def decode(body: bytes | None) -> Notification | None:
    """The notification in a journal body; None when it is damaged."""
    if body is None:
        return None
    try:
        return Notification.from_dict(orjson.loads(body) if orjson else json.loads(body))
    except (ValueError, TypeError, KeyError):
        return None


def _lock_file(directory: str, *, create: bool) -> int:
    """Open *directory*'s lock file and take its lock; raise BlockingIOError when held."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(os.path.join(directory, "lock"), flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """This engine's journal: request threads append, the worker reads, rotates, syncs."""

    def __init__(self, root: str, channel: str) -> None:
        self.root = root
        self.channel = channel
        self.directory = os.path.join(root, channel, _owner.engine_owner())
        self.cursor: Cursor | None = None
        self.appended = 0  # records written (under the lock)
        self.error: str | None = None  # why the journal is not writable, None when it is
        self._lock = threading.Lock()
        self._fd = -1  # the segment appends go to; -1 while appends are refused
        self._seq = 0
        self._size = 0
        self._lock_fd = -1

    def open(self) -> None:
        """Create the journal (directory, lock, first segment); raise OSError if impossible."""
        os.makedirs(os.path.dirname(self.directory), mode=0o700, exist_ok=True)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock_fd = _lock_file(self.directory, create=True)
        self.cursor = Cursor(self.directory, final=False)
        self._start_segment(1)
        self.error = None

    @property
    def writable(self) -> bool:
        return self._fd >= 0

    def append(self, body: bytes) -> bool:
        """Write one record (the request path); False when it is not on disk."""
        record = frame(body)
        with self._lock:
            if self._fd < 0:
                return False
            try:
                written = os.write(self._fd, record)
            except OSError as exc:
                written, self.error = 0, str(exc)
            if written == len(record):
                self._size += written
                self.appended += 1
                return True
            self._refuse(written)
            return False

    def _refuse(self, written: int) -> None:
        """After a failed or short write (lock held): cut it back, refuse appends."""
        if written:
            self.error = self.error or "short write (file system full?)"
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._size)
        self._fd = -1

    def resume(self) -> bool:
        """Worker: after a failure, try a fresh segment (a new journal if ours is gone)."""
        if self.cursor is not None and self._intact():
            self._start_segment(self._seq + 1)
            self.error = None
            return True
        old, self.cursor = self.cursor, None
        self._close_files()
        self.directory = os.path.join(self.root, self.channel, _owner.engine_owner())
        self.open()
        if old is not None:
            self._move(old)
        return True

    def _move(self, old: Cursor) -> None:
        """Rewrite what a deleted journal still holds (open files) into this one."""
        old.rewind()
        moved = 0
        while records := old.read(1000)[0]:
            moved += sum(self.append(body) for body in records if body is not None)
        old.close()
        with self._lock:
            self.appended -= moved  # accepted once, not twice

    def rotate(self) -> None:
        """Worker: start a new segment once the current one is large."""
        if self._fd >= 0 and self._size >= SEGMENT_BYTES:
            self._start_segment(self._seq + 1)

    def _start_segment(self, seq: int) -> None:
        fd = os.open(os.path.join(self.directory, segment_name(seq)), _OPEN_FLAGS, 0o600)
        _fsync_dir(self.directory)
        assert self.cursor is not None
        self.cursor.add_segment(seq)
        with self._lock:
            old, self._fd, self._seq, self._size = self._fd, fd, seq, 0
        if old >= 0:
            os.fsync(old)
            os.close(old)

    def _intact(self) -> bool:
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
        if self._fd >= 0 and not self._intact():
            with self._lock:
                self._fd, old = -1, self._fd
            self.error = f"the journal {self.directory} was deleted"
            os.close(old)
            return False
        return True

    def sync(self) -> None:
        """Worker: make what was appended and acknowledged durable (fsync)."""
        if self._fd >= 0:
            os.fsync(self._fd)
        if self.cursor is not None:
            self.cursor.fsync()

    def close(self, *, confirmed: int) -> None:
        """Stop appends; remove the journal if all was *confirmed*, else leave it for adoption."""
        with self._lock:
            fd, self._fd = self._fd, -1
            empty = self.appended <= confirmed
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)
        if empty and self.cursor is not None and self._intact():
            self.cursor.remove()
            os.unlink(os.path.join(self.directory, "lock"))
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)
        self._close_files()

    def _close_files(self) -> None:
        """Close what is open; the lock goes last (the journal is adoptable from then on)."""
        if self.cursor is not None:
            self.cursor.close()
            self.cursor = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def abandon(self) -> None:
        """In a forked child: close the inherited descriptors (the parent keeps its lock)."""
        self._fd = -1
        self._close_files()


class Adopted:
    """The journal of an owner that is gone, locked by us until delivered."""

    def __init__(self, directory: str, lock_fd: int) -> None:
        self.directory = directory
        self._lock_fd = lock_fd
        self.cursor = Cursor(directory, final=True)
        self.pending = self.cursor.count()

    def finish(self) -> None:
        """All delivered (or dropped): remove the journal, its lock last."""
        self.cursor.remove()
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.directory, "lock"))
            os.rmdir(self.directory)
        self.release()

    def release(self) -> None:
        """Stop adopting (engine closed): close files and the lock; it stays for the next."""
        self.cursor.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def adoptable(root: str, channel: str, exclude: set[str]) -> list[Adopted]:
    """Lock and return the journals of *channel* whose owners are gone."""
    channel_dir = os.path.join(root, channel)
    try:
        names = sorted(os.listdir(channel_dir))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        directory = os.path.join(channel_dir, name)
        if directory in exclude:
            continue
        try:
            lock_fd = _lock_file(directory, create=False)
        except OSError:  # alive (locked), or no lock file (being removed): not ours
            continue
        if not os.path.exists(os.path.join(directory, "lock")):
            os.close(lock_fd)  # removed by its adopter meanwhile
            continue
        found.append(Adopted(directory, lock_fd))
    return found
