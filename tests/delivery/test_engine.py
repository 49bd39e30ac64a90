"""The delivery engine on its own, with a scripted in-process publisher.

The publisher here is a real object implementing :class:`instrument.delivery.Publisher`
(it records batches, can be held, can fail on cue); the broker strategies' own tests
run the same engine against a real RabbitMQ.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from instrument.delivery import DELIVERY_OPTIONS, Delivery, PartialDelivery, retry_options
from instrument.events import Notification
from instrument.exceptions import DeliveryError, StrategyError
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent.parent


class ScriptedPublisher:
    """Records what it publishes; fails while ``failing``; blocks while ``hold`` is clear."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.attempt_times: list[float] = []
        self.failing = 0  # fail this many more attempts (-1: forever)
        self.hold = threading.Event()
        self.hold.set()
        self.connects = 0
        self.idles = 0

    def connect(self) -> None:
        self.connects += 1

    def publish_batch(self, batch: Sequence[Notification]) -> None:
        self.attempt_times.append(time.monotonic())
        self.hold.wait()
        if self.failing:
            self.failing -= 1 if self.failing > 0 else 0
            raise DeliveryError("broker says no")
        self.batches.append([n.message_id for n in batch])

    def idle(self) -> None:
        self.idles += 1

    def close(self) -> None:
        pass

    @property
    def sent(self) -> list[str]:
        return [message_id for batch in self.batches for message_id in batch]


def make(n: int = 1, priority: str = "INFO") -> list[Notification]:
    return [Notification.create("image.send", priority, {"i": i}) for i in range(n)]


@pytest.fixture
def publisher() -> ScriptedPublisher:
    return ScriptedPublisher()


@pytest.fixture
def engine(publisher: ScriptedPublisher) -> Iterator[Delivery]:
    delivery = Delivery(lambda: publisher, name="test", retry_backoff=0.01, close_timeout=1.0)
    yield delivery
    publisher.hold.set()
    delivery.close()


def test_delivers_everything_in_order_and_counts_it(
    engine: Delivery, publisher: ScriptedPublisher
) -> None:
    notes = make(500)
    for note in notes:
        assert engine.submit(note)
    assert engine.flush(5)
    assert publisher.sent == [n.message_id for n in notes]
    stats = engine.stats()
    assert (stats["accepted"], stats["sent"], stats["dropped"], stats["queued"]) == (500, 500, 0, 0)


def test_batches_are_at_most_batch_size(publisher: ScriptedPublisher) -> None:
    publisher.hold.clear()
    with_batches = Delivery(lambda: publisher, name="batches", batch_size=7)
    try:
        for note in make(50):
            with_batches.submit(note)
        publisher.hold.set()
        assert with_batches.flush(5)
    finally:
        with_batches.close()
    assert max(len(batch) for batch in publisher.batches) == 7
    assert len(publisher.sent) == 50


def test_submit_does_not_wait_for_a_blocked_broker(
    engine: Delivery, publisher: ScriptedPublisher
) -> None:
    publisher.hold.clear()
    engine.submit(make()[0])
    time.sleep(0.05)  # the worker is now stuck inside publish_batch, and stays stuck
    submitter = threading.Thread(target=lambda: [engine.submit(n) for n in make(1000)])
    submitter.start()
    submitter.join(30)  # a deadlock detector, not a speed limit: bench_delivery measures
    assert not submitter.is_alive(), "submit() waited on the stuck broker"
    assert not engine.flush(0.05)
    publisher.hold.set()
    assert engine.flush(5)
    assert len(set(publisher.sent)) == 1001


def test_failed_batches_are_retried_unchanged_with_exponential_backoff(
    publisher: ScriptedPublisher,
) -> None:
    publisher.failing = 4
    delivery = Delivery(
        lambda: publisher, name="backoff", retry_backoff=0.02, retry_max_backoff=0.08
    )
    notes = make(3)
    try:
        for note in notes:
            delivery.submit(note)
        assert delivery.flush(5)
    finally:
        delivery.close()
    assert publisher.sent == [n.message_id for n in notes]
    gaps = [
        b - a for a, b in zip(publisher.attempt_times, publisher.attempt_times[1:], strict=False)
    ]
    assert gaps[1] >= 0.035 and gaps[2] >= 0.07 and gaps[3] < 0.5  # doubled, then capped
    stats = delivery.stats()
    assert stats["failures"] == 4 and stats["retried"] == 12 and stats["sent"] == 3
    assert stats["last_error"] == "broker says no"


def test_finite_max_retries_drops_logs_and_counts(
    publisher: ScriptedPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.failing = -1
    delivery = Delivery(lambda: publisher, name="giveup", max_retries=3, retry_backoff=0.01)
    notes = make(2)
    try:
        with caplog.at_level(logging.ERROR, logger="instrument.delivery"):
            for note in notes:
                delivery.submit(note)
            assert delivery.flush(5)
    finally:
        delivery.close()
    stats = delivery.stats()
    assert stats["expired"] == 2 and stats["dropped"] == 2 and stats["sent"] == 0
    assert stats["failures"] == 3
    assert "dropping 2 notifications after 3 failed attempts" in caplog.text
    assert notes[0].message_id in caplog.text


def test_zero_max_retries_retries_until_the_broker_is_back(publisher: ScriptedPublisher) -> None:
    publisher.failing = 25
    delivery = Delivery(
        lambda: publisher,
        name="forever",
        max_retries=0,
        retry_backoff=0.001,
        retry_max_backoff=0.01,
    )
    try:
        delivery.submit(make()[0])
        assert delivery.flush(5)
    finally:
        delivery.close()
    assert delivery.stats()["failures"] == 25 and delivery.stats()["sent"] == 1


def test_overflow_refuses_the_newest_and_counts_it(
    publisher: ScriptedPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.hold.clear()
    delivery = Delivery(lambda: publisher, name="small", queue_size=10, batch_size=1)
    notes = make(30)
    try:
        delivery.submit(notes[0])
        time.sleep(0.05)  # notes[0] is in flight, the queue is empty
        with caplog.at_level(logging.ERROR, logger="instrument.delivery"):
            results = [delivery.submit(note) for note in notes[1:]]
        publisher.hold.set()
        assert delivery.flush(5)
    finally:
        delivery.close()
    assert results == [True] * 10 + [False] * 19
    assert publisher.sent == [n.message_id for n in notes[:11]]
    stats = delivery.stats()
    assert stats["overflow"] == 19 and stats["dropped"] == 19 and stats["accepted"] == 11
    assert caplog.text.count("dropping new ones") == 1  # rate-limited


def test_close_counts_what_memory_could_not_deliver(
    publisher: ScriptedPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.failing = -1
    delivery = Delivery(lambda: publisher, name="closing", retry_backoff=10)
    for note in make(5):
        delivery.submit(note)
    with caplog.at_level(logging.ERROR, logger="instrument.delivery"):
        started = time.monotonic()
        delivery.close(timeout=0.2)
    assert time.monotonic() - started < 3
    stats = delivery.stats()
    assert stats["abandoned"] == 5 and stats["dropped"] == 5 and stats["queued"] == 0
    assert stats["accepted"] == stats["sent"] + stats["dropped"] + stats["queued"]
    assert "5 notifications were not delivered" in caplog.text
    with pytest.raises(StrategyError):
        delivery.submit(make()[0])
    delivery.close()  # idempotent


def test_idle_publisher_is_kept_alive(engine: Delivery, publisher: ScriptedPublisher) -> None:
    engine.submit(make()[0])
    assert engine.flush(5)
    time.sleep(1.3)
    assert publisher.idles >= 1


def test_outbox_keeps_notifications_across_an_outage_and_a_new_engine(
    tmp_path: Path, publisher: ScriptedPublisher
) -> None:
    outbox = str(tmp_path / "outbox")
    publisher.failing = -1
    first = Delivery(lambda: publisher, name="box", outbox_path=outbox, retry_backoff=0.01)
    notes = make(20)
    for note in notes:
        first.submit(note)
    wait_until(lambda: first.stats()["stored"] == 20, 5.0)
    first.close(timeout=0.1)
    assert first.stats()["abandoned"] == 0 and first.stats()["outbox"] == 20

    publisher.failing = 0
    second = Delivery(lambda: publisher, name="box", outbox_path=outbox)
    try:
        assert second.flush(5)
        assert second.stats()["outbox"] == 0
    finally:
        second.close()
    assert sorted(publisher.sent) == sorted(n.message_id for n in notes)


def test_outbox_of_a_killed_process_is_delivered_by_the_next_one(
    tmp_path: Path, publisher: ScriptedPublisher
) -> None:
    outbox = str(tmp_path / "outbox")
    child = _python(
        f"""
        from instrument.delivery import Delivery
        from instrument.events import Notification
        from instrument.exceptions import DeliveryError
        class Down:
            def connect(self): raise DeliveryError("down")
            def publish_batch(self, batch): raise DeliveryError("down")
            def idle(self): pass
            def close(self): pass
        d = Delivery(Down, name="box", outbox_path={outbox!r}, retry_backoff=0.01)
        for i in range(300):
            n = Notification.create("image.send", "INFO", {{"i": i}})
            d.submit(n)
            print(n.message_id)
        while d.stats()["stored"] < 300:
            time.sleep(0.01)
        print("STORED", flush=True)
        time.sleep(60)
        """
    )
    ids = [line.strip() for line in _read_until(child, "STORED")]
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    delivery = Delivery(lambda: publisher, name="box", outbox_path=outbox)
    try:
        assert delivery.flush(10)
        assert delivery.stats()["adopted"] == 300
    finally:
        delivery.close()
    assert sorted(publisher.sent) == sorted(ids)


def test_a_live_process_keeps_its_outbox_rows(tmp_path: Path) -> None:
    outbox = str(tmp_path / "outbox")
    blocked = ScriptedPublisher()
    blocked.failing = -1
    owner = Delivery(lambda: blocked, name="box", outbox_path=outbox, retry_backoff=0.01)
    other = ScriptedPublisher()
    try:
        owner.submit(make()[0])
        wait_until(lambda: owner.stats()["stored"] == 1, 5.0)
        pid = os.fork()
        if pid == 0:  # child: a sibling worker sharing the outbox must not take the row
            code = 1
            try:
                sibling = Delivery(lambda: other, name="box", outbox_path=outbox)
                time.sleep(0.3)
                sibling.close()
                code = 0 if (other.sent, sibling.stats()["adopted"]) == ([], 0) else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        owner.close(timeout=0.1)


def test_forked_child_sends_only_its_own_notifications(tmp_path: Path) -> None:
    log_dir = tmp_path
    code = f"""
        import os, json
        from instrument.delivery import Delivery
        from instrument.events import Notification
        class ToFile:
            def connect(self): pass
            def publish_batch(self, batch):
                with open(os.path.join({str(log_dir)!r}, str(os.getpid())), "a") as f:
                    f.writelines(n.message_id + "\\n" for n in batch)
            def idle(self): pass
            def close(self): pass
        import threading
        gate = threading.Event()
        class Held(ToFile):
            def publish_batch(self, batch):
                gate.wait()
                super().publish_batch(batch)
        d = Delivery(Held, name="fork")
        parent_ids = []
        for i in range(100):
            n = Notification.create("image.send", "INFO", {{"i": i}})
            d.submit(n); parent_ids.append(n.message_id)
        time.sleep(0.1)
        pid = os.fork()
        if pid == 0:
            gate.set()   # a copied queue would now be sent by the child
            child_ids = []
            for i in range(10):
                n = Notification.create("image.send", "INFO", {{"child": i}})
                d.submit(n); child_ids.append(n.message_id)
            ok = d.flush(5)
            print(json.dumps({{"child": child_ids, "pid": os.getpid(), "ok": ok}}), flush=True)
            d.close()
            os._exit(0)
        os.waitpid(pid, 0)
        gate.set()
        print(json.dumps({{"parent": parent_ids, "pid": os.getpid(), "ok": d.flush(5)}}))
    """
    child = _python(code)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    by_role = {("child" if "child" in line else "parent"): line for line in lines}
    assert by_role["child"]["ok"] and by_role["parent"]["ok"]
    for role in ("child", "parent"):
        sent = (log_dir / str(by_role[role]["pid"])).read_text().split()
        assert sent == by_role[role][role], role


def test_interpreter_exit_flushes(tmp_path: Path) -> None:
    sink = tmp_path / "sent"
    child = _python(
        f"""
        from instrument.delivery import Delivery
        from instrument.events import Notification
        class Slow:
            def connect(self): pass
            def publish_batch(self, batch):
                time.sleep(0.05)
                with open({str(sink)!r}, "a") as f:
                    f.writelines(n.message_id + "\\n" for n in batch)
            def idle(self): pass
            def close(self): pass
        d = Delivery(Slow, name="exit", batch_size=10)
        for i in range(50):
            d.submit(Notification.create("image.send", "INFO", {{"i": i}}))
        """
    )
    child.communicate(timeout=30)
    assert child.returncode == 0
    assert len(sink.read_text().split()) == 50


@pytest.mark.parametrize("library", ["gevent", "eventlet"])
def test_works_under_monkey_patching(library: str) -> None:
    pytest.importorskip(library)
    patch = {
        "gevent": "from gevent import monkey; monkey.patch_all()",
        "eventlet": "import eventlet; eventlet.monkey_patch()",
    }[library]
    spawn = {"gevent": "gevent.spawn", "eventlet": "eventlet.spawn"}[library]
    child = _python(
        f"""
        {patch}
        import {library}, time, json
        from instrument.delivery import Delivery
        from instrument.events import Notification
        sent = []
        submitted = [0]
        during = []  # submits that completed while a publish was in progress
        class Sleepy:
            def connect(self): pass
            def publish_batch(self, batch):
                before = submitted[0]
                time.sleep(0.02)   # cooperative: other greenlets run meanwhile
                during.append(submitted[0] - before)
                sent.extend(n.message_id for n in batch)
            def idle(self): pass
            def close(self): pass
        d = Delivery(Sleepy, name="green", batch_size=50)
        def request(k):
            for i in range(100):
                d.submit(Notification.create("image.send", "INFO", {{"k": k, "i": i}}))
                submitted[0] += 1
                time.sleep(0)
        threads = [{spawn}(request, k) for k in range(10)]
        for t in threads:
            t.wait() if hasattr(t, "wait") else t.join()
        ok = d.flush(10)
        print(json.dumps({{"ok": ok, "sent": len(set(sent)), "during": max(during)}}))
        d.close()
        """,
        preamble=False,
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"] and result["sent"] == 1000
    assert result["during"] > 0, "requests kept submitting while the worker published"


def test_two_live_engines_sharing_an_outbox_never_send_each_others_rows(tmp_path: Path) -> None:
    outbox = str(tmp_path / "outbox")
    first, second = ScriptedPublisher(), ScriptedPublisher()
    first.hold.clear()
    second.hold.clear()
    a = Delivery(lambda: first, name="box", outbox_path=outbox, batch_size=5)
    b = Delivery(lambda: second, name="box", outbox_path=outbox, batch_size=5)
    mine, theirs = make(10), make(10)
    try:
        for note in mine:
            a.submit(note)
        wait_until(lambda: a.stats()["stored"] == 10, 5.0)
        for note in theirs:
            b.submit(note)
        wait_until(lambda: b.stats()["stored"] == 10, 5.0)
        time.sleep(0.1)  # each worker has loaded a batch and waits in publish_batch
        first.hold.set()
        second.hold.set()
        assert a.flush(5) and b.flush(5)
    finally:
        a.close()
        b.close()
    assert sorted(first.sent) == sorted(n.message_id for n in mine)
    assert sorted(second.sent) == sorted(n.message_id for n in theirs)
    assert a.stats()["adopted"] == b.stats()["adopted"] == 0


def test_rows_of_a_closed_engine_are_adopted_by_the_next_engine_of_the_process(
    tmp_path: Path,
) -> None:
    outbox = str(tmp_path / "outbox")
    down, up = ScriptedPublisher(), ScriptedPublisher()
    down.failing = -1
    first = Delivery(lambda: down, name="box", outbox_path=outbox, retry_backoff=10)
    notes = make(3)
    for note in notes:
        first.submit(note)
    wait_until(lambda: first.stats()["stored"] == 3, 5.0)
    first.close(timeout=0)
    second = Delivery(lambda: up, name="box", outbox_path=outbox)
    try:
        assert second.flush(5)
    finally:
        second.close()
    assert sorted(up.sent) == sorted(n.message_id for n in notes)


def test_flush_is_not_satisfied_by_rows_adopted_after_it_was_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from instrument.delivery import _spool

    monkeypatch.setattr(_spool, "_ADOPT_INTERVAL", 0.05)
    outbox = str(tmp_path / "outbox")
    other = _python(  # 10 older notifications in the journal of a live process
        f"""
        from instrument.delivery._outbox import Outbox, encode
        from instrument.events import Notification
        box = Outbox({outbox!r}, "box")
        box.open()
        for i in range(10):
            box.append(encode(Notification.create("image.send", "INFO", {{"i": i}})))
        print("READY", flush=True)
        time.sleep(60)
        """
    )
    try:
        _read_until(other, "READY")
        publisher = SlowPublisher(0.05)
        publisher.hold.clear()
        delivery = Delivery(lambda: publisher, name="box", outbox_path=outbox, batch_size=1)
        own = make(3)
        for note in own:
            delivery.submit(note)
        wait_until(lambda: len(publisher.attempt_times) == 1, 5.0)  # own[0] in flight
        result: list[bool] = []
        flusher = threading.Thread(target=lambda: result.append(delivery.flush(10)))
        flusher.start()
        time.sleep(0.1)  # flush() has taken its target
    finally:
        other.kill()
        other.wait(10)
    try:
        publisher.hold.set()  # the other process is gone: its older rows go first
        flusher.join(15)
        assert result == [True]
        assert {n.message_id for n in own} <= set(publisher.sent)
        wait_until(lambda: delivery.stats()["adopted"] == 10, 5.0)
    finally:
        delivery.close()


class SlowPublisher(ScriptedPublisher):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def publish_batch(self, batch: Sequence[Notification]) -> None:
        super().publish_batch(batch)
        time.sleep(self.delay)


class ChangingErrors(ScriptedPublisher):
    """Fails with a different text every time (host, counts), as real brokers do."""

    def publish_batch(self, batch: Sequence[Notification]) -> None:
        if self.failing:
            self.failing -= 1
            raise DeliveryError(f"broker says no ({len(self.attempt_times)} times)")
        super().publish_batch(batch)

    def connect(self) -> None:
        self.attempt_times.append(time.monotonic())


def test_repeated_failures_are_logged_rate_limited_whatever_their_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher = ChangingErrors()
    publisher.failing = 4
    delivery = Delivery(lambda: publisher, name="noisy", retry_backoff=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="instrument.delivery"):
            delivery.submit(make()[0])
            assert delivery.flush(5)
    finally:
        delivery.close()
    assert delivery.stats()["failures"] == 4
    assert caplog.text.count("cannot deliver") == 1


def test_close_while_the_worker_waits_on_the_broker_says_so_accurately(
    publisher: ScriptedPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.hold.clear()
    delivery = Delivery(lambda: publisher, name="busy")
    for note in make(3):
        delivery.submit(note)
    wait_until(lambda: len(publisher.attempt_times) == 1, 5.0)
    with caplog.at_level(logging.WARNING, logger="instrument.delivery"):
        delivery.close(timeout=0.05)
    assert "still waiting on the broker" in caplog.text
    assert "lost" not in caplog.text.replace("(lost)", "")
    publisher.hold.set()  # the broker answers after all: delivered, nothing abandoned
    wait_until(lambda: delivery.stats()["sent"] == 3, 5.0)
    assert delivery.stats()["abandoned"] == 0


def test_submit_racing_with_close_is_counted_never_lost(publisher: ScriptedPublisher) -> None:
    delivery = Delivery(lambda: publisher, name="race", close_timeout=1.0)
    delivery.submit(make()[0])
    assert delivery.flush(5)

    class CloseBeforeAppend(int):
        """queue_size whose comparison runs close() between submit's check and append."""

        def __le__(self, other: object) -> bool:
            delivery.close()
            return False

    delivery.queue_size = CloseBeforeAppend(10)
    assert delivery.submit(make()[0]) is False
    stats = delivery.stats()
    assert stats["accepted"] == 2 and stats["sent"] == 1 and stats["abandoned"] == 1


def test_an_engine_dropped_without_close_is_still_flushed_at_exit(tmp_path: Path) -> None:
    sink = tmp_path / "sent"
    child = _python(
        f"""
        import gc
        from instrument.delivery import Delivery
        from instrument.events import Notification
        class Slow:
            def connect(self): pass
            def publish_batch(self, batch):
                time.sleep(0.05)
                with open({str(sink)!r}, "a") as f:
                    f.writelines(n.message_id + "\\n" for n in batch)
            def idle(self): pass
            def close(self): pass
        d = Delivery(Slow, name="dropped", batch_size=10)
        for i in range(50):
            d.submit(Notification.create("image.send", "INFO", {{"i": i}}))
        del d
        gc.collect()
        """
    )
    child.communicate(timeout=30)
    assert child.returncode == 0
    assert len(sink.read_text().split()) == 50


def test_no_thread_before_the_first_submit_so_a_preforking_master_forks_safely(
    tmp_path: Path,
) -> None:
    code = f"""
        import os, json, threading
        from instrument.delivery import Delivery
        from instrument.events import Notification
        class ToFile:
            def connect(self): pass
            def publish_batch(self, batch):
                with open(os.path.join({str(tmp_path)!r}, str(os.getpid())), "a") as f:
                    f.writelines(n.message_id + "\\n" for n in batch)
            def idle(self): pass
            def close(self): pass
        d = Delivery(ToFile, name="preload", outbox_path={str(tmp_path / "box")!r})
        threads = [t.name for t in threading.enumerate() if t.name.startswith("instrument-")]
        pid = os.fork()
        if pid == 0:
            n = Notification.create("image.send", "INFO", {{"child": 1}})
            d.submit(n)
            print(json.dumps({{"child": [n.message_id], "pid": os.getpid(), "ok": d.flush(5)}}))
            d.close()
            os._exit(0)
        os.waitpid(pid, 0)
        n = Notification.create("image.send", "INFO", {{"parent": 1}})
        d.submit(n)
        ok = d.flush(5)
        print(json.dumps({{"parent": [n.message_id], "pid": os.getpid(), "ok": ok, "t": threads}}))
    """
    child = _python(code)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    by_role = {("child" if "child" in line else "parent"): line for line in lines}
    assert by_role["parent"]["t"] == []  # nothing ran in the master before the fork
    for role in ("child", "parent"):
        assert by_role[role]["ok"], role
        sent = (tmp_path / str(by_role[role]["pid"])).read_text().split()
        assert sent == by_role[role][role], role


def test_fork_while_the_worker_runs_pauses_it_and_both_sides_deliver(tmp_path: Path) -> None:
    code = f"""
        import os, json
        from instrument.delivery import Delivery
        from instrument.events import Notification
        class ToFile:
            def connect(self): pass
            def publish_batch(self, batch):
                with open(os.path.join({str(tmp_path)!r}, str(os.getpid())), "a") as f:
                    f.writelines(n.message_id + "\\n" for n in batch)
            def idle(self): pass
            def close(self): pass
        d = Delivery(ToFile, name="busy", batch_size=5, outbox_path={str(tmp_path / "b")!r})
        ids = []
        for i in range(200):
            n = Notification.create("image.send", "INFO", {{"i": i}})
            d.submit(n); ids.append(n.message_id)
            if i == 100:
                pid = os.fork()
                if pid == 0:
                    n = Notification.create("image.send", "INFO", {{"child": 1}})
                    d.submit(n)
                    ok = d.flush(5)
                    print(json.dumps({{"child": [n.message_id], "pid": os.getpid(), "ok": ok}}))
                    d.close()
                    os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({{"parent": ids, "pid": os.getpid(), "ok": d.flush(5)}}))
    """
    child = _python(code)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    by_role = {("child" if "child" in line else "parent"): line for line in lines}
    for role in ("child", "parent"):
        assert by_role[role]["ok"], role
        sent = (tmp_path / str(by_role[role]["pid"])).read_text().split()
        assert sorted(sent) == sorted(by_role[role][role]), role


def test_options_are_declared_for_strategies() -> None:
    names = [option.name for option in (*DELIVERY_OPTIONS, *retry_options("rabbit"))]
    assert names == [
        "queue_size",
        "batch_size",
        "outbox_path",
        "outbox_fsync_interval",
        "close_timeout",
        "rabbit_max_retries",
        "rabbit_retry_backoff",
        "rabbit_retry_max_backoff",
    ]
    assert {o.name: o.default for o in retry_options("rabbit")} == {
        "rabbit_max_retries": 0,
        "rabbit_retry_backoff": 2.0,
        "rabbit_retry_max_backoff": 30.0,
    }


# --------------------------------------------------------------------------- helpers


def _python(code: str, *, preamble: bool = True) -> subprocess.Popen[str]:
    body = textwrap.dedent(code)
    if preamble:
        body = "import time\n" + body
    return subprocess.Popen(
        [sys.executable, "-c", body],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _read_until(child: subprocess.Popen[str], marker: str, timeout: float = 30) -> list[str]:
    assert child.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in child.stdout:
        if line.strip() == marker:
            return lines
        lines.append(line)
        assert time.monotonic() < deadline, "child too slow"
    raise AssertionError(
        f"child ended before {marker}: {child.stderr.read() if child.stderr else ''}"
    )


class PartlyRefusing(ScriptedPublisher):
    """A broker that, the first time it sees them, rejects notifications marked
    ``reject`` for good and releases those marked ``release`` (accepting the rest)."""

    def __init__(self) -> None:
        super().__init__()
        self.released: set[str] = set()

    def publish_batch(self, batch: Sequence[Notification]) -> None:
        self.batches.append([n.message_id for n in batch])
        accepted, rejected = [], []
        for index, note in enumerate(batch):
            verdict = note.payload.get("verdict")
            if verdict == "reject":
                rejected.append(index)
            elif verdict == "release" and note.message_id not in self.released:
                self.released.add(note.message_id)
            else:
                accepted.append(index)
        if len(accepted) < len(batch):
            raise PartialDelivery("some were not accepted", accepted, rejected)


@pytest.mark.parametrize("journal", [False, True])
def test_a_batch_settled_in_part_sends_again_only_the_rest_and_drops_what_was_refused(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, journal: bool
) -> None:
    """One notification a broker refuses for good must not stall delivery, nor have the
    ones it accepted sent again on every retry (in memory, and from the journal)."""
    broker = PartlyRefusing()
    verdicts = ["accept", "reject", "accept", "release", "accept"]
    notes = [Notification.create("image.send", "INFO", {"verdict": v}) for v in verdicts]
    outbox = str(tmp_path / "outbox") if journal else None
    delivery = Delivery(
        lambda: broker, name="partial", outbox_path=outbox, retry_backoff=0.01, close_timeout=1.0
    )
    try:
        with caplog.at_level(logging.ERROR, "instrument.delivery"):
            for note in notes:
                delivery.submit(note)
            assert delivery.flush(10)
            later = make(3)
            for note in later:
                delivery.submit(note)
            assert delivery.flush(10)
        stats = delivery.stats()
        assert (stats["sent"], stats["expired"], stats["queued"]) == (7, 1, 0)
        first, second = broker.batches[:2]
        assert first == [n.message_id for n in notes]
        assert second == [notes[3].message_id]  # only the released one again
        assert broker.sent.count(notes[0].message_id) == 1
        assert "refused 1 notifications for good, dropped" in caplog.text
        assert notes[1].message_id in caplog.text
    finally:
        delivery.close()
    if journal:  # all of it is done with: a next process sends none of it again
        again = PartlyRefusing()
        following = Delivery(lambda: again, name="partial", outbox_path=outbox)
        try:
            assert following.flush(5)
        finally:
            following.close()
        assert again.sent == []
