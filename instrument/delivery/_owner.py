"""The owner id that names a journal's directory: ``<pid>:<process start time>:<engine id>``.

Decisions:

* The id is for people reading the directory, never for deciding who is alive: that
  is the journal's ``flock`` (:mod:`._outbox`), which the kernel drops when the process
  dies, and which a reused pid cannot fake.
* The start time still makes a reused pid's journal a different directory.
"""

from __future__ import annotations

import os
import uuid

__all__ = ["engine_owner", "process_owner"]


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
