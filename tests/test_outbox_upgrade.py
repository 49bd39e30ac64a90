"""Upgrading: an earlier version's SQLite outbox at ``outbox_path`` is delivered, once.

The file is built as the earlier version built it (its schema, WAL, rows of several
owners and channels); three processes of the new version start on it at the same
time against a real RabbitMQ node: every row arrives, none twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from instrument.events import Notification
from tests.support.consume import consume, ids
from tests.support.old_outbox import old_outbox

pytest.importorskip("kombu")

if TYPE_CHECKING:
    from tests.support.rabbitmq import RabbitNode

pytest_plugins = ["tests.support.rabbitmq_fixtures"]
pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parent.parent

_STARTER = """
    from instrument.strategies.rabbit import RabbitStrategy
    strategy = RabbitStrategy(transport_url={url!r}, outbox_path={outbox!r}, **{names!r})
    assert strategy._delivery.flush(120)
    strategy.close()
    print(strategy._delivery.stats()["adopted"])
"""


def test_an_old_sqlite_outbox_is_imported_once_and_every_row_arrives(
    rabbit_node: RabbitNode, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {"rabbit_notification_exchange": f"up-{tag}", "rabbit_notification_topic": f"u-{tag}"}
    outbox = tmp_path / "outbox.db"
    rabbit = [Notification.create("image.send", "INFO", {"i": i}) for i in range(3000)]
    qpid = [Notification.create("image.send", "INFO", {"q": i}) for i in range(7)]
    old_outbox(outbox, {"rabbit": rabbit, "qpid": qpid})
    code = textwrap.dedent(_STARTER.format(url=rabbit_node.url, outbox=str(outbox), names=names))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    starters = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE)
        for _ in range(3)  # at the same time: one imports, the others wait for it
    ]
    adopted = [int(child.communicate(timeout=180)[0] or -1) for child in starters]
    assert all(child.returncode == 0 for child in starters)
    assert sum(adopted) == len(rabbit), adopted  # imported once, delivered once
    received = Counter(
        ids(consume(rabbit_node.url, names["rabbit_notification_topic"], expect=len(rabbit)))
    )
    assert set(received) == {note.message_id for note in rabbit}
    assert max(received.values()) == 1
    assert outbox.is_dir() and sorted(os.listdir(tmp_path)) == ["outbox.db"]
    (journal,) = (outbox / "qpid").iterdir()  # waits for a qpid strategy, in order
    records = [
        line.split(b" ", 1)[1]
        for line in (journal / "000000000001.seg").read_bytes().split(b"\n")[:-1]
    ]
    assert [json.loads(body)["message_id"] for body in records] == [n.message_id for n in qpid]
