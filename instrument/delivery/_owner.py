"""Who owns an outbox row: ``<pid>:<process start time>:<engine id>``, and is it alive.

Decisions:

* The start time makes a reused pid a different owner: an owner is gone when its pid no
  longer runs, or runs a newer process (the start time in ``/proc`` differs), or it is
  this very process and the engine id is no longer live here (the engine was closed;
  :func:`register` and :func:`unregister` keep this process's registry).
* Processes sharing an outbox must share a host and a pid namespace: SQLite's WAL does
  not work over network file systems anyway.
"""

from __future__ import annotations

import os
import uuid

__all__ = ["alive", "engine_owner", "process_owner", "register", "unregister"]

# Owner ids of this process's open outboxes (engines): rows of an owner of this process
# that is not in here belong to a closed engine and may be adopted.
_live: set[str] = set()


def register(owner: str) -> None:
    """*owner* is an engine open in this process: its rows are not adoptable."""
    _live.add(owner)


def unregister(owner: str) -> None:
    """*owner*'s engine is closed: its rows left over are adoptable from now on."""
    _live.discard(owner)


def _start_time(pid: int) -> str:
    """The process start time in clock ticks since boot (Linux), or "" elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return fields[19].decode() if len(fields) > 19 else ""


def process_owner(pid: int | None = None) -> str:
    """The owner id of a process: its pid and start time, so a reused pid differs."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid)}"


def engine_owner() -> str:
    """A new owner id for one engine of this process: ``<pid>:<start time>:<uuid>``."""
    return f"{process_owner()}:{uuid.uuid4().hex}"


def alive(owner: str) -> bool:
    """Whether the engine *owner* still runs (see the module docstring)."""
    pid_text, _, rest = owner.partition(":")
    started, _, engine = rest.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid() and _start_time(pid) == started:
        # Only an engine open in this process owns its rows; an id without an engine
        # part is from older code in an earlier image of this pid (exec): adopt them.
        return bool(engine) and owner in _live
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to someone else
    return _start_time(pid) == started
