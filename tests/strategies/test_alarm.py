"""A memory alarm with batches larger than the socket buffers: one connection, none lost.

RabbitMQ answers a memory alarm with ``connection.blocked`` and stops reading from a
publishing connection. A batch that fits the socket buffers is written at once and
then waited out (``test_rabbit.py``); 30 notifications of 40 KB do not fit: the write
itself stops mid-frame. It must not count as a dead connection (before, the write
timeout cut it and every retry opened another: 5 seen). The qpid strategy (AMQP 1.0:
flow control, no ``connection.blocked``) is held to the same promise, counted with
the node's sockets (RabbitMQ 3.10 lists no AMQP 1.0 connections).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from instrument.events import Notification
from instrument.strategies._broker_strategy import BrokerStrategy
from instrument.strategies.qpid import QpidStrategy
from instrument.strategies.rabbit import RabbitStrategy
from tests.support.consume import consume, ids

if TYPE_CHECKING:
    from tests.support.rabbitmq import RabbitNode
    from tests.support.rabbitmq_fixtures import NodeFactory

pytest.importorskip("kombu")
pytest.importorskip("proton")

pytest_plugins = ["tests.support.rabbitmq_fixtures"]
pytestmark = pytest.mark.broker

COUNT, SIZE = 30, 40_000
ALARM = 8.0  # seconds: several write and confirm timeouts (1 s each)


def rabbit(node: RabbitNode, tag: str) -> BrokerStrategy:
    return RabbitStrategy(
        transport_url=node.url,
        rabbit_notification_exchange=f"glance-{tag}",
        rabbit_notification_topic=f"n-{tag}",
        rabbit_confirm_timeout=1.0,
        rabbit_connect_timeout=1.0,
        rabbit_retry_backoff=0.05,
        rabbit_retry_max_backoff=0.5,
        close_timeout=1.0,
    )


def qpid(node: RabbitNode, tag: str) -> BrokerStrategy:
    return QpidStrategy(
        qpid_hostname="127.0.0.1",
        qpid_port=node.port,
        qpid_notification_exchange=f"glance-{tag}",
        qpid_notification_topic=f"n-{tag}",
        qpid_settle_timeout=1.0,
        qpid_connect_timeout=1.0,
        qpid_reconnect_interval_min=0.05,
        qpid_reconnect_interval_max=0.5,
        close_timeout=1.0,
    )


def counter(node: RabbitNode, kind: str) -> Callable[[], int]:
    """How many client connections the node holds open for the strategy's protocol.

    rabbit: ``rabbitmqctl list_connections``. RabbitMQ 3.10's AMQP 1.0 plugin lists
    nothing in ``list_amqp10_connections`` (nor in ``list_connections``) for a live
    proton connection, so for qpid the node's own sockets are counted instead: the
    TCP connections on its port that it has not closed (established or close-wait),
    which is also what a connection left behind during an alarm looks like.
    """
    if kind != "qpid":
        return lambda: len(
            node.ctl("list_connections", "--quiet", "--no-table-headers", "pid").split()
        )
    return lambda: _held(node.port)


def _held(port: int) -> int:
    held = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.rsplit(":", 1)[1], 16) == port and state in _HELD:
            held += 1
    return held


_HELD = ("01", "08")  # TCP_ESTABLISHED, TCP_CLOSE_WAIT (/proc/net/tcp states, hex)


@pytest.fixture
def node(fresh_rabbit_node: NodeFactory) -> Iterator[RabbitNode]:
    yield fresh_rabbit_node()


@pytest.fixture
def small_send_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """py-amqp sockets get a 32 KB send buffer: the batch cannot fit, the write stops.

    On loopback the kernel grows the buffers to megabytes, so without this the whole
    batch is accepted at once and only the wait for confirms is blocked.
    """
    transport: Any = pytest.importorskip("amqp.transport")
    original = transport._AbstractTransport._set_socket_options

    def set_options(self: Any, settings: Any) -> None:
        original(self, settings)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)

    monkeypatch.setattr(transport._AbstractTransport, "_set_socket_options", set_options)


@pytest.mark.parametrize("kind", ["rabbit", "rabbit-small-buffer", "qpid"])
def test_large_batches_during_a_memory_alarm_hold_one_connection(
    kind: str, node: RabbitNode, request: pytest.FixtureRequest
) -> None:
    tag = uuid.uuid4().hex[:8]
    if kind == "rabbit-small-buffer":
        request.getfixturevalue("small_send_buffer")
    strategy = (qpid if kind == "qpid" else rabbit)(node, tag)
    count = counter(node, kind)
    seen: list[int] = []
    with strategy:
        strategy.check(5)
        node.ctl("set_vm_memory_high_watermark", "0.0000001")  # publishers are blocked
        try:
            sent = [
                Notification.create("image.update", "INFO", {"p": "x" * SIZE}) for _ in range(COUNT)
            ]
            for note in sent:
                strategy.emit(note)
            ended = time.monotonic() + ALARM
            while time.monotonic() < ended:
                seen.append(count())
                time.sleep(0.5)
        finally:
            node.ctl("set_vm_memory_high_watermark", "0.4")
        assert strategy.flush(60)
        got = consume(node.url, f"n-{tag}", expect=COUNT)
    assert max(seen) == 1, seen
    assert set(ids(got)) == {note.message_id for note in sent}
