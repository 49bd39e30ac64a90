"""The process around the engines: at-fork pause and resume, and close at interpreter exit.

Decisions:

* **Fork safety**: a running worker is paused between two steps around ``fork()``
  (``os.register_at_fork``; bounded, a step stuck on a broker delays a fork by at most
  a few seconds). The journal needs no lock of its own here: its calls are system
  calls, and a child closes the descriptors it inherited (:mod:`._outbox`). An engine
  is paused until its worker has ended, also after close() gave up waiting for it.
  After ``fork()`` each engine restarts in the child
  (:meth:`Engine.restart_in_child`); the parent's queued notifications stay the
  parent's.
* **Engines are held strongly** until closed and their worker has ended: one dropped
  without close() still has its worker running and must still be flushed at exit
  (:func:`close_all_at_exit` closes every engine not closed); one closed must still be
  paused at fork until its worker ended.
* Two threads forking at once each resume only the workers they paused themselves: the
  at-fork hooks run in the forking thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Protocol

__all__ = [
    "Engine",
    "after_fork_in_child",
    "after_fork_in_parent",
    "before_fork",
    "close_all_at_exit",
    "forget",
    "keep",
]

log = logging.getLogger("instrument.delivery")


class Engine(Protocol):
    """What the process hooks need of a :class:`~instrument.delivery.Delivery`."""

    name: str

    def pause_for_fork(self) -> bool:
        """Pause a running worker between two steps (bounded); True when it is paused."""

    def resume_after_fork(self) -> None:
        """In the parent: undo a :meth:`pause_for_fork` that returned True."""

    def restart_in_child(self) -> None:
        """In the child: drop what is inherited and start afresh (or :func:`forget`)."""

    def close(self) -> None:
        """Flush (bounded) and stop."""


# Every engine not closed yet, and every closed one whose worker still runs.
_engines: set[Engine] = set()
# Engines whose worker a fork under way paused, by forking thread.
_paused: dict[int, list[Engine]] = {}


def keep(engine: Engine) -> None:
    """Pause *engine* at every fork and close it at exit, until :func:`forget`."""
    _engines.add(engine)


def forget(engine: Engine) -> None:
    """*engine* is closed and its worker ended (or never started): hooks leave it alone."""
    _engines.discard(engine)


def before_fork() -> None:
    """Pause the workers (bounded)."""
    paused = _paused.setdefault(threading.get_ident(), [])
    paused.extend(engine for engine in list(_engines) if engine.pause_for_fork())


def after_fork_in_parent() -> None:
    """Resume the workers this thread paused."""
    for engine in _paused.pop(threading.get_ident(), []):
        engine.resume_after_fork()


def after_fork_in_child() -> None:
    """Every engine restarted."""
    _paused.clear()  # the child's workers are replaced, their locks never used again
    for engine in list(_engines):
        engine.restart_in_child()


def close_all_at_exit() -> None:
    """Close every engine still kept; report failures, never raise."""
    for engine in list(_engines):
        try:
            engine.close()
        except Exception:  # interpreter exit: report, never raise
            log.exception("%s: close at exit failed", engine.name)


os.register_at_fork(
    before=before_fork,
    after_in_parent=after_fork_in_parent,
    after_in_child=after_fork_in_child,
)
atexit.register(close_all_at_exit)
