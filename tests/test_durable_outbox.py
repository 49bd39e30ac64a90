"""The durable outbox against real RabbitMQ nodes: nothing whose emit() returned is lost.

Each emitting process records every returned ``emit()`` in a side file (one
``write(2)`` after the return, so the page cache keeps it through SIGKILL); a kombu
consumer must then receive every recorded notification. Duplicates are counted and
bounded (at most one batch per kill).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from instrument.strategies.rabbit import RabbitStrategy
from tests.support.consume import consume, ids
from tests.support.rabbitmq import free_port

pytest.importorskip("kombu")

if TYPE_CHECKING:
    from tests.support.rabbitmq import RabbitNode

pytest_plugins = ["tests.support.rabbitmq_fixtures"]
pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parent.parent
RUNS = 20  # one of them under gevent
PER_THREAD = 500  # 4 threads: up to 2,000 notifications per run, 40,000 in all
BATCH = 200

# Emits from 4 threads (greenlets under gevent), each returned id appended to a side
# file, until killed; prints READY once the strategy is built.
_EMITTER = """
    {patch}
    import os, sys, threading, time
    from instrument.events import Notification
    from instrument.strategies.rabbit import RabbitStrategy
    strategy = RabbitStrategy(
        transport_url={url!r}, outbox_path={outbox!r}, batch_size={batch},
        rabbit_retry_backoff=0.05, rabbit_retry_max_backoff=0.2, **{names!r})
    side = os.open({side!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    def emit_all(thread):
        for i in range({per_thread}):
            note = Notification.create("image.send", "INFO", {{"t": thread, "i": i}})
            strategy.emit(note)
            os.write(side, (note.message_id + "\\n").encode())
            if i % 25 == 0:
                time.sleep(0.001)
    print("READY", flush=True)
    threads = [threading.Thread(target=emit_all, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    strategy.close()
"""


def _names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"rabbit_notification_exchange": f"kill-{tag}", "rabbit_notification_topic": f"k-{tag}"}


def _emitter(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _deliver_left_overs(url: str, outbox: str, names: dict[str, str]) -> dict[str, int]:
    """A new process (this one) with the same outbox and a live broker."""
    strategy = RabbitStrategy(transport_url=url, outbox_path=outbox, **names)
    try:
        strategy._delivery.flush(120)  # adopts every dead journal, waits for them
        return strategy._delivery.stats()
    finally:
        strategy.close()


def test_kill_at_any_instant_loses_nothing_whose_emit_returned(
    rabbit_node: RabbitNode, tmp_path: Path
) -> None:
    names, outbox, returned = _names(), str(tmp_path / "outbox"), []
    rng = random.Random()
    for run in range(RUNS):
        side = str(tmp_path / f"side-{run}")
        # Half the runs deliver while they emit (kills land between publish and ack),
        # half have no broker at all (everything waits in the journal).
        url = rabbit_node.url if run % 2 else f"amqp://guest:guest@127.0.0.1:{free_port()}//"
        patch = "from gevent import monkey; monkey.patch_all()" if run == RUNS - 1 else ""
        child = _emitter(
            _EMITTER.format(
                patch=patch,
                url=url,
                outbox=outbox,
                batch=BATCH,
                names=names,
                side=side,
                per_thread=PER_THREAD,
            )
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "READY"
        time.sleep(rng.uniform(0.0, 0.5))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        returned += Path(side).read_text().split()
    stats = _deliver_left_overs(rabbit_node.url, outbox, names)
    received = Counter(
        ids(
            consume(
                rabbit_node.url,
                names["rabbit_notification_topic"],
                expect=len(returned),
                timeout=120,
            )
        )
    )
    lost = set(returned) - set(received)
    duplicates = sum(count - 1 for count in received.values())
    print(
        f"\nkill test: {RUNS} runs, {len(returned)} returned emits, {len(lost)} lost, "
        f"{duplicates} duplicates, adopted {stats['adopted']}"
    )
    assert not lost, f"{len(lost)} of {len(returned)} lost"
    assert duplicates <= RUNS * BATCH
    assert not os.listdir(os.path.join(outbox, "rabbit")), "delivered journals are removed"


def test_a_black_hole_broker_then_a_live_one_loses_nothing(
    rabbit_node: RabbitNode, tmp_path: Path
) -> None:
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(100)  # accepts connections, never answers
    names, outbox = _names(), str(tmp_path / "outbox")
    port = hole.getsockname()[1]
    code = f"""
        from instrument.events import Notification
        from instrument.strategies.rabbit import RabbitStrategy
        strategy = RabbitStrategy(transport_url="amqp://guest:guest@127.0.0.1:{port}//",
                                  outbox_path={outbox!r}, close_timeout=1.0, **{names!r})
        for i in range(2000):
            note = Notification.create("image.send", "INFO", {{"i": i}})
            strategy.emit(note)
            print(note.message_id)
        strategy.close()
        print("kept", strategy._delivery.stats()["outbox"])
    """
    try:
        child = _emitter(code)
        out, _ = child.communicate(timeout=60)
    finally:
        hole.close()
    lines = out.split()
    assert child.returncode == 0 and lines[-2] == "kept"
    returned = lines[:-2]
    assert int(lines[-1]) == len(returned) == 2000  # close() says what is on disk
    _deliver_left_overs(rabbit_node.url, outbox, names)
    received = ids(consume(rabbit_node.url, names["rabbit_notification_topic"], expect=2000))
    assert set(returned) <= set(received)
