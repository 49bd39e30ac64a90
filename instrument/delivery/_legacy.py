"""The upgrade path: an SQLite outbox of an earlier version becomes adoptable journals.

Decisions:

* **Imported once, then delivered by adoption.** Before this version ``outbox_path``
  was one SQLite file (table ``outbox``: ``channel``, ``body``, rows in ``id`` order).
  Its rows are rewritten as journals nobody owns,
  ``<outbox_path>/<channel>/imported:<uuid>/``, which the ordinary adoption
  (:mod:`._outbox`) then delivers and removes, whatever strategy or process runs next:
  no second delivery path.
* **Safe against other processes**, which start at the same time (gunicorn workers
  without ``preload_app``): one ``fcntl.flock`` on ``<outbox_path>.upgrade.lock``,
  waited for (the constructor, never a request, runs this). The winner builds the
  journals in ``<outbox_path>.upgrading``, fsyncs them, removes the SQLite file (and
  its ``-wal``/``-shm``), then moves each journal into ``<outbox_path>``; the others
  then find a directory and nothing to do.
* **Crash-safe at every step**: until the journals are durable the SQLite file is the
  truth (a crash rebuilds ``.upgrading`` from it); once the file is gone ``.upgrading``
  is, and whoever takes the lock next moves what is left of it. The lock file goes
  last.
* A row that does not parse is counted and logged as lost, never written.
* Processes of the earlier version must be stopped first: the file they write to is
  removed (a directory takes its place).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterable
from typing import Final

from ._outbox import SEGMENT_BYTES, decode, encode, fsync_dir, private_dirs
from ._segments import frame, segment_name

__all__ = ["upgrade"]

log = logging.getLogger("instrument.delivery")

_CHANNELS: Final = "SELECT DISTINCT channel FROM outbox"
_ROWS: Final = "SELECT body FROM outbox WHERE channel = ? ORDER BY id"


def upgrade(outbox_path: str) -> None:
    """Turn an earlier version's SQLite outbox at *outbox_path* into journals (once).

    Raises OSError or sqlite3.Error when it cannot (the caller keeps journals apart).
    """
    staging = f"{outbox_path}.upgrading"
    if not (os.path.isfile(outbox_path) or os.path.isdir(staging)):
        return
    lock = f"{outbox_path}.upgrade.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process may be importing: wait for it
        if os.path.isfile(outbox_path):
            _stage(outbox_path, staging)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(outbox_path + suffix)
            fsync_dir(os.path.dirname(os.path.abspath(outbox_path)))
        if os.path.isdir(staging):
            _move_into(staging, outbox_path)
        os.unlink(lock)
    finally:
        os.close(fd)


def _stage(database: str, staging: str) -> None:
    """Write every row of *database* as journals under *staging*, durably."""
    shutil.rmtree(staging, ignore_errors=True)  # a crashed attempt: the file is the truth
    os.mkdir(staging, 0o700)
    kept = lost = 0
    db = sqlite3.connect(database, timeout=30.0)  # reads a WAL left behind too
    try:
        for (channel,) in db.execute(_CHANNELS).fetchall():
            journal = os.path.join(staging, str(channel), f"imported:{uuid.uuid4().hex}")
            os.makedirs(journal, mode=0o700)
            rows = db.execute(_ROWS, (channel,))
            written, lost_here = _write_journal(journal, (_bytes(body) for (body,) in rows))
            kept, lost = kept + written, lost + lost_here
            fsync_dir(os.path.dirname(journal))
    finally:
        db.close()
    fsync_dir(staging)
    log.warning(
        "outbox_path %s was an SQLite outbox of an earlier version: %d notifications "
        "imported into journals (delivered by adoption), the file is removed",
        database,
        kept,
    )
    if lost:
        log.error("outbox %s: %d unreadable rows could not be imported (lost)", database, lost)


def _bytes(body: object) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)  # type: ignore[call-overload]


def _write_journal(directory: str, bodies: Iterable[bytes]) -> tuple[int, int]:
    """Segments, an empty ack and the lock file of one journal; ``(written, lost)``."""
    seq, size, written, lost = 1, 0, 0, 0
    out = _create(directory, segment_name(seq))
    try:
        for body in bodies:
            note = decode(body)
            if note is None:
                lost += 1
                continue
            record = frame(encode(note))
            if size and size + len(record) > SEGMENT_BYTES:
                os.fsync(out)
                os.close(out)
                seq, size = seq + 1, 0
                out = _create(directory, segment_name(seq))
            os.write(out, record)
            size, written = size + len(record), written + 1
        os.fsync(out)
    finally:
        os.close(out)
    for name in ("ack", "lock"):
        os.close(_create(directory, name))
    fsync_dir(directory)
    return written, lost


def _create(directory: str, name: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    return os.open(os.path.join(directory, name), flags, 0o600)


def _move_into(staging: str, root: str) -> None:
    """Move each staged journal into *root* (idempotent: what is left of a crash too)."""
    for channel in os.listdir(staging):
        target = os.path.join(root, channel)
        private_dirs(target)
        source = os.path.join(staging, channel)
        for journal in os.listdir(source):
            os.rename(os.path.join(source, journal), os.path.join(target, journal))
        fsync_dir(target)
        os.rmdir(source)
    os.rmdir(staging)
