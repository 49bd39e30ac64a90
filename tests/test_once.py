"""Run once per process: warnings and exit hooks."""

from __future__ import annotations

import threading

from instrument._once import run_once


def test_runs_for_exactly_one_of_many_threads_until_reset() -> None:
    calls: list[int] = []

    @run_once
    def hook(number: int) -> None:
        calls.append(number)

    threads = [threading.Thread(target=hook, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and hook.done
    hook.done = False
    hook(8)
    hook(9)
    assert calls[1:] == [8]
