"""Journals whose owner is gone: found by their lock, adopted, delivered, removed.

Decisions:

* **Alive means locked.** Each journal's ``lock`` file is held with ``fcntl.flock`` by
  its owner for the journal's life; the kernel drops it when the process dies, however
  it dies, and a reused pid cannot fake it. A journal whose lock can be taken has no
  live owner: the adopter keeps that lock while it delivers the journal, then removes
  the journal's files, the lock file last.
* A journal without a lock file is being removed by its adopter: not ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os

from ._segments import Cursor

__all__ = ["Adopted", "adoptable", "lock_file"]


log = logging.getLogger("instrument.delivery")


def lock_file(directory: str, *, create: bool) -> int:
    """Open *directory*'s lock file and take its lock; raise BlockingIOError when held."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(os.path.join(directory, "lock"), flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


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
            lock_fd = lock_file(directory, create=False)
        except OSError:  # alive (locked), or no lock file (being removed): not ours
            continue
        if not os.path.exists(os.path.join(directory, "lock")):
            os.close(lock_fd)  # removed by its adopter meanwhile
            continue
        try:
            found.append(Adopted(directory, lock_fd))
        except (OSError, ValueError):  # unreadable (permissions, damage): leave it, unlocked
            os.close(lock_fd)
            log.warning("instrument: cannot adopt the journal %s", directory, exc_info=True)
    return found
