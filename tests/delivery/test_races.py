"""The delivery engine's races with fork() and close(), each forced to happen.

Forks run in a child interpreter (a fork from pytest's own process would run this
file's at-fork state in every later test); each script reports what the forked child
saw as JSON lines. Bounds of seconds here are deadlock detectors, never speed limits.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from instrument.delivery import Delivery
from instrument.delivery._segments import Cursor
from instrument.exceptions import StrategyError

from .test_engine import ScriptedPublisher, _python, make

# The head of every script: a publisher that writes what it sent to a file per pid.
_PRELUDE = """
    import json, os, threading, time
    from instrument.delivery import _worker
    from instrument.delivery import Delivery
    from instrument.events import Notification
    def note():
        return Notification.create("image.send", "INFO", {{}})
    class ToFile:
        def connect(self): pass
        def publish_batch(self, batch):
            with open(os.path.join({sink!r}, str(os.getpid())), "a") as f:
                f.writelines(n.message_id + "\\n" for n in batch)
        def idle(self): pass
        def close(self): pass
    def report(**values):
        print(json.dumps(values), flush=True)
"""


def _run(tmp_path: Path, script: str) -> dict[str, dict[str, Any]]:
    """Run *script* after the prelude; its reports by ``role``."""
    child = _python(_PRELUDE.format(sink=str(tmp_path)) + script)
    out, err = child.communicate(timeout=60)  # a deadlock detector
    assert child.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {line["role"]: line for line in lines}


# ------------------------------------------------------------------ fork


def test_a_fork_during_close_still_pauses_the_worker_until_it_has_ended(
    tmp_path: Path,
) -> None:
    reports = _run(
        tmp_path,
        """
    gate = threading.Event()
    where = ["idle"]
    class Held(ToFile):
        def publish_batch(self, batch):
            where[0] = "publishing"
            gate.wait()
            super().publish_batch(batch)
            where[0] = "published"
    d = Delivery(Held, name="closing")
    d.submit(note())
    while where[0] != "publishing":
        time.sleep(0.005)
    closer = threading.Thread(target=d.close, kwargs={"timeout": 0.1})
    closer.start()
    while not d.closed:
        time.sleep(0.001)
    time.sleep(0.05)  # close() now waits for the worker, which is still publishing
    threading.Timer(0.5, gate.set).start()  # the broker answers while fork() waits
    pid = os.fork()
    if pid == 0:
        report(role="child", where=where[0])
        os._exit(0)
    os.waitpid(pid, 0)
    closer.join(10)
    report(role="parent", closed=not closer.is_alive(), sent=d.stats()["sent"])
    """,
    )
    assert reports["child"]["where"] == "published", "fork() landed in the middle of a step"
    assert reports["parent"] == {"role": "parent", "closed": True, "sent": 1}


# ------------------------------------------------------------------ submit and close()


def test_a_notification_close_already_waits_for_does_not_stall_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publisher = ScriptedPublisher()
    delivery = Delivery(lambda: publisher, name="race", close_timeout=20.0)
    assert delivery.submit(make()[0]) and delivery.flush(5)
    worker = delivery._worker
    closer = threading.Thread(target=delivery.close)
    target_taken = threading.Event()
    real_accepted = worker.accepted

    def accepted() -> int:  # close()'s flush takes its target from this
        count = real_accepted()
        if threading.current_thread() is closer:
            target_taken.set()
        return count

    def wake() -> None:  # runs between submit()'s append and its look at `closed`
        closer.start()
        assert target_taken.wait(10)

    monkeypatch.setattr(worker, "accepted", accepted)
    monkeypatch.setattr(worker, "wake", wake)
    late = make()[0]
    try:
        taken = delivery.submit(late)
        closer.join(10)  # a liveness bound, half of close_timeout
        assert not closer.is_alive(), "close() waited for a notification nobody sends"
    finally:
        closer.join()
    stats = delivery.stats()
    assert stats["accepted"] == 2 and stats["sent"] + stats["abandoned"] == 2
    assert (late.message_id in publisher.sent) == taken


@pytest.mark.parametrize("outbox", [False, True], ids=["memory", "outbox"])
def test_submits_racing_with_close_are_each_delivered_stored_or_counted(
    tmp_path: Path, outbox: bool
) -> None:
    path = str(tmp_path / "box") if outbox else None
    publisher = ScriptedPublisher()
    delivery = Delivery(
        lambda: publisher, name="race", queue_size=10**6, outbox_path=path, close_timeout=20.0
    )
    warm_up = make()[0]  # the worker runs: close() has something to wait for
    results = {warm_up.message_id: delivery.submit(warm_up)}
    assert delivery.flush(5)
    batches = [make(2000) for _ in range(4)]
    go = threading.Barrier(len(batches) + 1)

    def submit_all(notes: list[Any]) -> None:
        go.wait()
        for note in notes:
            try:
                results[note.message_id] = delivery.submit(note)
            except StrategyError:  # closed
                return

    submitters = [threading.Thread(target=submit_all, args=(notes,)) for notes in batches]
    closer = threading.Thread(target=delivery.close)
    for thread in submitters:
        thread.start()
    go.wait()
    closer.start()
    closer.join(10)  # a liveness bound, half of close_timeout
    assert not closer.is_alive(), "close() waited for a notification nobody sends"
    for thread in submitters:
        thread.join(10)
    accepted = {message_id for message_id, ok in results.items() if ok}
    refused = set(results) - accepted
    sent, stored = set(publisher.sent), _stored(path)
    stats = delivery.stats()
    assert len(sent) == len(publisher.sent) and not (sent | stored) & refused
    assert stats["accepted"] == len(results)
    if outbox:
        assert sent | stored == accepted and stats["abandoned"] == len(refused)
    else:
        assert sent <= accepted
        assert len(accepted) == len(sent) + stats["abandoned"] - len(refused)


def _stored(path: str | None) -> set[str]:
    if path is None or not Path(path).exists():
        return set()
    found: set[str] = set()
    for directory in Path(path).glob("*/*"):
        cursor = Cursor(str(directory), final=True)
        while records := cursor.read(1000)[0]:
            found.update(json.loads(body or b"")["message_id"] for body in records)
        cursor.close()
    return found


def test_two_threads_forking_at_once_each_resume_only_the_workers_they_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The at-fork hooks run in the forking thread: B's after-hook must not resume A's."""
    from instrument.delivery import _process, _worker

    monkeypatch.setattr(_worker, "_FORK_PAUSE", 0.2)  # B gives up soon
    publisher = ScriptedPublisher()
    engine = Delivery(lambda: publisher, name="forks", retry_backoff=0.01, close_timeout=1.0)
    try:
        engine.submit(make(1)[0])
        assert engine.flush(5)
        a_paused, a_may_resume = threading.Event(), threading.Event()

        def fork_a() -> None:  # the hooks of a fork in thread A, the fork itself left out
            _process.before_fork()
            a_paused.set()
            a_may_resume.wait(10)
            _process.after_fork_in_parent()

        thread_a = threading.Thread(target=fork_a)
        thread_a.start()
        assert a_paused.wait(10)
        _process.before_fork()  # thread B (this one): A holds the worker, B gives up
        _process.after_fork_in_parent()
        assert engine._worker._busy.locked(), "B resumed a worker that A's fork paused"
        a_may_resume.set()
        thread_a.join(10)
        assert not engine._worker._busy.locked()
        engine.submit(make(1)[0])
        assert engine.flush(5), "the worker runs again after both forks"
    finally:
        engine.close()


def test_a_first_submit_racing_with_close_is_counted_when_no_worker_ever_starts() -> None:
    """submit() passes its closed check; close() marks the engine closed and is held
    before it stops the (never started) worker; submit() appends and must take it back."""
    publisher = ScriptedPublisher()
    engine = Delivery(lambda: publisher, name="first", retry_backoff=0.01, close_timeout=1.0)
    may_stop = threading.Event()
    real_stop = engine._worker.stop

    def held_stop(join_timeout: float) -> Any:
        may_stop.wait(10)
        return real_stop(join_timeout=join_timeout)

    closer = threading.Thread(target=engine.close)

    def close_wins_the_race() -> None:  # in place of starting the worker
        closer.start()
        while not engine.closed:
            time.sleep(0.001)

    engine._worker.stop = held_stop  # type: ignore[method-assign]
    engine._run_worker = close_wins_the_race  # type: ignore[method-assign]
    accepted = engine.submit(make(1)[0])
    may_stop.set()
    closer.join(10)
    stats = engine.stats()
    assert accepted is False
    assert (stats["queued"], stats["abandoned"]) == (0, 1), stats
    assert publisher.batches == []
