"""The durable outbox: notifications kept in SQLite until the broker confirmed them.

Decisions:

* **SQLite in WAL mode, standard library only.** ``synchronous=FULL``: a committed row
  survives a SIGKILL of the process and a power loss. The cost (one fsync per batch)
  is paid by the delivery worker, never by the request that emitted.
* **Private files**: the database is created 0600 (SQLite gives its ``-wal``/``-shm``
  files the same mode) and directories the outbox creates 0700; payloads are only
  for the process's own user.
* **A row is deleted only after the broker confirmed it**, so a crash between publish
  and delete means the row is sent again by the next process (at-least-once; consumers
  deduplicate on ``message_id``).
* **Every row has an owner** (:mod:`._owner`) and a ``channel`` (the strategy name, so
  a rabbit and a qpid strategy may share one file). An engine sends only the rows it
  owns, so two live engines of one process sharing a file and a strategy name never
  send each other's rows. Rows of an owner that is gone are *adopted* with one
  ``UPDATE ... WHERE owner = ?`` inside a write transaction, so two live engines never
  adopt, and never send, the same row. Adoption runs at start-up and then every few
  seconds (:mod:`._spool`), so the rows of a gunicorn worker that crashed are delivered
  by a sibling, and those a closed engine left by the next engine of the same process.
* **Fork**: the child must neither use nor close a connection it inherited (closing it
  could release the parent's locks or checkpoint under it). :meth:`Outbox.abandon`
  keeps the object alive forever and forgets it; the child opens its own.
* **No fork inside an SQLite call.** Every method that uses SQLite holds one lock of
  the process, which the pre-fork hook (:mod:`._process`) takes too
  (:func:`hold_for_fork`, after pausing the workers): even when a worker's pause gave
  up (a publish stuck on a broker), a fork waits for the outbox call under way, and the
  worker's next one waits for the fork. The lock is reentrant, so a thread that forks
  from inside an outbox call does not wait for itself, and the child gets a new one,
  released (:func:`reset_after_fork`). No request thread ever takes it: only the
  worker, and close() for a worker that never started, use an outbox.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, ParamSpec, TypeVar

from . import _owner

__all__ = [
    "FORK_WAIT",
    "Outbox",
    "hold_for_fork",
    "release_after_fork",
    "reset_after_fork",
]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_owner ON outbox (channel, owner, id);
"""

# Connections inherited over fork: never closed, never collected (see module docstring).
_abandoned: list[sqlite3.Connection] = []

FORK_WAIT: Final = 3.0  # longest a fork waits for an outbox call to end (a stalled disk)

# Held around every SQLite call of this process's outboxes, and across fork() (see the
# module docstring). Looked up at each call: the child replaces it.
_calls = threading.RLock()
_fork_holder: int | None = None  # the thread whose pre-fork hook holds _calls

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _one_call(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run *method* holding :data:`_calls`, so that no fork lands in the middle of it."""

    @functools.wraps(method)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _calls:
            return method(*args, **kwargs)

    return locked


def hold_for_fork() -> bool:
    """Before ``fork()``: wait (bounded) until no outbox call runs, and keep it so.

    False when one did not end in time: the fork goes ahead rather than hang on a
    stalled disk. :func:`release_after_fork` must follow in the parent either way.
    """
    global _fork_holder
    if not _calls.acquire(timeout=FORK_WAIT):
        return False
    _fork_holder = threading.get_ident()
    return True


def release_after_fork() -> None:
    """In the parent after ``fork()``: outbox calls may run again.

    Only the thread that holds the lock releases it: two threads forking at once must
    not release each other's.
    """
    global _fork_holder
    if _fork_holder == threading.get_ident():
        _fork_holder = None
        _calls.release()


def reset_after_fork() -> None:
    """In the child: a new lock, released; the inherited one may be held for good."""
    global _calls, _fork_holder
    _calls, _fork_holder = threading.RLock(), None


class Outbox:
    """Rows of one channel in one SQLite file, used by one thread of one process."""

    def __init__(self, path: str | os.PathLike[str], channel: str) -> None:
        self.path = os.fspath(path)
        self.channel = channel
        self.owner = _owner.engine_owner()
        _owner.register(self.owner)
        self._db: sqlite3.Connection | None = None

    @_one_call
    def open(self) -> None:
        """Open (and create) the database; idempotent."""
        if self._db is not None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)  # only what we create: 0700
        # Created 0600 before SQLite opens it: SQLite gives -wal/-shm the same mode.
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    @_one_call
    def add(self, bodies: Sequence[str]) -> None:
        """Store *bodies* (JSON envelopes) as rows owned by this process, in one commit."""
        now = time.time()
        rows = [(self.channel, self.owner, now, body) for body in bodies]
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO outbox (channel, owner, created, body) VALUES (?, ?, ?, ?)", rows
            )

    @_one_call
    def load(self, limit: int) -> list[tuple[int, str]]:
        """The oldest *limit* rows this process owns, as ``(id, body)``."""
        cursor = self.db.execute(
            "SELECT id, body FROM outbox WHERE channel = ? AND owner = ? ORDER BY id LIMIT ?",
            (self.channel, self.owner, limit),
        )
        return [(int(row_id), str(body)) for row_id, body in cursor]

    @_one_call
    def delete(self, ids: Sequence[int]) -> None:
        """Remove confirmed (or given up) rows."""
        with self._transaction() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(row_id,) for row_id in ids])

    @_one_call
    def adopt(self) -> list[int]:
        """Take over the rows of owners that no longer run; return their ids."""
        owners = [
            str(owner)
            for (owner,) in self.db.execute(
                "SELECT DISTINCT owner FROM outbox WHERE channel = ? AND owner != ?",
                (self.channel, self.owner),
            )
        ]
        adopted: list[int] = []
        for owner in owners:
            if _owner.alive(owner):
                continue
            with self._transaction() as db:
                where = (self.channel, owner)
                ids = db.execute(
                    "SELECT id FROM outbox WHERE channel = ? AND owner = ?", where
                ).fetchall()
                db.execute(
                    "UPDATE outbox SET owner = ? WHERE channel = ? AND owner = ?",
                    (self.owner, *where),
                )
                adopted += [int(row_id) for (row_id,) in ids]
        return adopted

    @_one_call
    def close(self) -> None:
        """Close the database; this engine's rows left over are adoptable from now on."""
        _owner.unregister(self.owner)
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def abandon(self) -> None:
        """After fork, in the child: forget the inherited connection without closing it."""
        if self._db is not None:
            _abandoned.append(self._db)
        self._db = None  # the owner stays the parent's engine: the child never uses this

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): the write lock up front."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
