"""Server processes as the benchmarks see them: their CPU time and the CPUs they run on.

Linux only (``/proc``): the benchmarks measure servers on this machine.
"""

from __future__ import annotations

import os
from pathlib import Path

#: ``--pin``: the server's CPU; the clients get the others.
SERVER_CPUS = {0}


def _tasks(pid: int) -> list[Path]:
    """The ``/proc`` folders of *pid*'s threads; none for a process that just ended."""
    try:
        return list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []


def process_cpu(pid: int) -> float:
    """CPU seconds of all of *pid*'s threads, to the nanosecond (schedstat).

    /proc/<pid>/stat counts clock ticks (10 ms): over a download of a fraction of a
    second that alone moves a ratio by several percent.
    """
    total = 0
    for task in _tasks(pid):
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total / 1e9


def _tree(pid: int) -> list[int]:
    """*pid* and its descendants, as they are now."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in _tasks(current):
            try:
                pending.extend(int(child) for child in (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
                continue
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds of *pid* and all its descendants (gunicorn's workers, Apache's daemon)."""
    return sum(process_cpu(current) for current in _tree(pid))


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Every thread of *pid* and its descendants on *cpus* (threads and processes
    started later inherit it)."""
    for current in _tree(pid):
        for task in _tasks(current):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except ProcessLookupError:  # a thread that just ended
                continue


def client_cpus() -> set[int]:
    """The CPUs the clients run on with ``--pin``: all but the server's."""
    return os.sched_getaffinity(0) - SERVER_CPUS


def pin_self_away() -> None:
    """This process (the clients) on every CPU but the server's."""
    os.sched_setaffinity(0, client_cpus())
