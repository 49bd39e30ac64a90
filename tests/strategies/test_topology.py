"""Both broker strategies adopt the exchange and queues that exist (real RabbitMQ node).

Each case pre-declares Glance's exchange or its ``<topic>.*`` queues unlike the kit's
configuration (the way Ceilometer, an oslo.messaging service or kolla-ansible would),
then sends 1,000 notifications through the rabbit or the qpid strategy: all of them
must be read back by a plain kombu consumer, and one warning must name the difference
(one for the exchange and one for the three queues when both differ).
Names are unique per test; the queues are deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from instrument.events import Notification
from instrument.strategies.base import Strategy
from instrument.strategies.qpid import QpidStrategy
from instrument.strategies.rabbit import RabbitStrategy
from tests.support.consume import consume, ids

kombu = pytest.importorskip("kombu")
pytest.importorskip("proton")

if TYPE_CHECKING:
    from tests.support.rabbitmq import RabbitNode

pytest_plugins = ["tests.support.rabbitmq_fixtures"]
pytestmark = pytest.mark.broker

N = 1_000
PRIORITIES = ("INFO", "WARN", "ERROR")
RETRY = {"close_timeout": 1.0}


@dataclasses.dataclass(frozen=True)
class Case:
    """What exists before the kit starts, how the kit is configured, what it must say."""

    exchange: dict[str, Any] | None  # exchange_declare keywords; None: not pre-declared
    queues: dict[str, Any] | None  # queue_declare keywords for the three queues
    durable: bool  # the kit's <prefix>_durable_queues
    says: tuple[str, ...]  # fragments of the warnings ({e}: exchange, {t}: topic)
    stream: bool = False
    warnings: int = 1  # one per kind of thing that differs (exchange, queues)


QUEUES = "queues '{t}.info', '{t}.warn', '{t}.error' already exist with"
CASES = {
    "exchange-durable": Case(
        {"durable": True},
        None,
        False,
        ("exchange '{e}' already exists with durable=true (configured: false)",),
    ),
    "exchange-transient": Case(
        {"durable": False},
        None,
        True,
        ("exchange '{e}' already exists with durable=false (configured: true)",),
    ),
    "quorum-queues": Case(
        None,
        {"durable": True, "arguments": {"x-queue-type": "quorum"}},
        False,
        (QUEUES, "durable=true (configured: false)", "x-queue-type='quorum' (configured: none)"),
    ),
    "kolla-durable-exchange-quorum-queues": Case(  # the measured 0 of 500 (issue 14)
        {"durable": True},
        {"durable": True, "arguments": {"x-queue-type": "quorum"}},
        False,
        (
            "exchange '{e}' already exists with durable=true (configured: false)",
            QUEUES,
            "x-queue-type='quorum' (configured: none)",
        ),
        warnings=2,
    ),
    "stream-queues": Case(
        None,
        {"durable": True, "arguments": {"x-queue-type": "stream"}},
        True,
        (QUEUES, "x-queue-type='stream' (configured: none)"),
        stream=True,
    ),
    "classic-with-arguments": Case(
        None,
        {
            "durable": False,
            "arguments": {
                "x-max-length": 5 * N,
                "x-message-ttl": 600_000,
                "x-overflow": "reject-publish",
            },
        },
        False,
        (
            QUEUES,
            f"x-max-length={5 * N} (configured: none)",
            "x-message-ttl=600000 (configured: none)",
            "x-overflow='reject-publish' (configured: none)",
        ),
    ),
}


def make(
    kind: str,
    node: RabbitNode,
    exchange: str,
    topic: str,
    durable: bool,
    user: str = "guest",
    **extra: Any,
) -> Strategy:
    """The *kind* strategy on *node*; *extra* options without their ``<kind>_`` prefix.

    A *user* other than guest has the password ``pw``.
    """
    options = {f"{kind}_{name}": value for name, value in extra.items()}
    if kind == "rabbit":
        return RabbitStrategy(
            transport_url=node.url.replace("guest:guest@", f"{user}:pw@")
            if user != "guest"
            else node.url,
            rabbit_notification_exchange=exchange,
            rabbit_notification_topic=topic,
            rabbit_durable_queues=durable,
            **RETRY,
            **options,
        )
    if user != "guest":
        options |= {"qpid_username": user, "qpid_password": "pw", "qpid_sasl_mechanisms": "PLAIN"}
    return QpidStrategy(
        qpid_hostname="127.0.0.1",
        qpid_port=node.port,
        qpid_notification_exchange=exchange,
        qpid_notification_topic=topic,
        qpid_durable_queues=durable,
        **RETRY,
        **options,
    )


@pytest.fixture
def names(rabbit_node: RabbitNode) -> Iterator[tuple[str, str]]:
    """A fresh exchange and topic; their queues and exchange are deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    exchange, topic = f"glance-{tag}", f"n-{tag}"
    yield exchange, topic
    with kombu.Connection(rabbit_node.url) as conn:
        channel = conn.channel()
        for key in ("info", "warn", "error"):
            channel.queue_delete(f"{topic}.{key}")
        channel.exchange_delete(exchange)


def predeclare(node: RabbitNode, case: Case, exchange: str, topic: str) -> None:
    with kombu.Connection(node.url) as conn:
        channel = conn.channel()
        if case.exchange is not None:
            channel.exchange_declare(exchange, "topic", auto_delete=False, **case.exchange)
        for key in ("info", "warn", "error") if case.queues is not None else ():
            channel.queue_declare(f"{topic}.{key}", auto_delete=False, **case.queues)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("kind", ["rabbit", "qpid"])
def test_existing_topology_is_used_as_it_is(
    kind: str,
    case: str,
    rabbit_node: RabbitNode,
    names: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec, (exchange, topic) = CASES[case], names
    predeclare(rabbit_node, spec, exchange, topic)
    sent = [
        Notification.create("image.send", PRIORITIES[i % 3], {"i": i, "bytes_sent": i})
        for i in range(N)
    ]
    with (
        caplog.at_level(logging.INFO, logger=f"instrument.strategies.{kind}"),
        make(kind, rabbit_node, exchange, topic, spec.durable) as strategy,
    ):
        strategy.check(10)  # a connection of its own: the worker's must not warn again
        for note in sent:
            strategy.emit(note)
        assert strategy.flush(120), strategy.stats()
        assert strategy.stats()["sent"] == N
    got = consume(rabbit_node.url, topic, expect=N, stream=spec.stream)
    assert sorted(ids(got)) == sorted(note.message_id for note in sent)  # 0 lost, 0 doubled
    by_id = {json.loads(m["body"])["message_id"]: m["routing_key"] for m in got}
    assert all(by_id[n.message_id] == f"{topic}.{n.priority.lower()}" for n in sent)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == spec.warnings, warnings
    for fragment in spec.says:
        assert fragment.format(e=exchange, t=topic) in "\n".join(warnings)


@pytest.mark.parametrize("kind", ["rabbit", "qpid"])
def test_missing_queues_are_created_as_quorum_queues_when_asked(
    kind: str, rabbit_node: RabbitNode, names: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    exchange, topic = names
    quorum = {"quorum_queue": True, "quorum_delivery_limit": 5, "quorum_max_memory_length": 100}
    sent = [Notification.create("image.send", "WARN", {"i": i}) for i in range(10)]
    with (
        caplog.at_level(logging.WARNING),
        make(kind, rabbit_node, exchange, topic, False, **quorum) as strategy,
    ):
        strategy.check(10)
        for note in sent:
            strategy.emit(note)
        assert strategy.flush(30)
    listed = rabbit_node.ctl("list_queues", "name", "type", "durable", "arguments", "-q")
    rows = {line.split("\t")[0]: line for line in listed.splitlines()}
    for key in ("info", "warn", "error"):
        name, arguments = f"{topic}.{key}", '{"x-delivery-limit",5},{"x-max-in-memory-length",100}'
        assert rows[name].startswith(f"{name}\tquorum\ttrue\t"), rows[name]
        assert arguments in rows[name]
    assert sorted(ids(consume(rabbit_node.url, topic, expect=10))) == sorted(
        note.message_id for note in sent
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_user_who_may_not_configure_publishes_to_what_exists(
    rabbit_node: RabbitNode, names: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    exchange, topic = names
    predeclare(rabbit_node, CASES["quorum-queues"], exchange, topic)
    predeclare(rabbit_node, CASES["exchange-durable"], exchange, topic)
    user = f"pub-{uuid.uuid4().hex[:8]}"
    rabbit_node.add_user(user, "pw", vhost=None)
    rabbit_node.ctl("set_permissions", "-p", "/", user, "", ".*", ".*")  # no configure
    sent = [Notification.create("image.send", "INFO", {"i": i}) for i in range(10)]
    with (
        caplog.at_level(logging.INFO, logger="instrument.strategies.rabbit"),
        make("rabbit", rabbit_node, exchange, topic, False, user=user) as strategy,
    ):
        for note in sent:
            strategy.emit(note)
        assert strategy.flush(30), strategy.stats()
    got = consume(rabbit_node.url, topic, expect=len(sent))
    assert sorted(ids(got)) == sorted(note.message_id for note in sent)
    assert "not compared with the configuration (no configure permission" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("kind", ["rabbit", "qpid"])
def test_no_permission_to_publish_keeps_the_notifications_and_says_why(
    kind: str, rabbit_node: RabbitNode, names: tuple[str, str]
) -> None:
    exchange, topic = names
    predeclare(rabbit_node, CASES["exchange-durable"], exchange, topic)
    user = f"ro-{uuid.uuid4().hex[:8]}"
    rabbit_node.add_user(user, "pw", vhost=None)
    # may bind its queues (write on them, read on the exchange), may not publish to it
    rabbit_node.ctl("set_permissions", "-p", "/", user, "^n-", f"^{topic}\\.", ".*")
    with make(kind, rabbit_node, exchange, topic, False, user=user) as strategy:
        for note in [Notification.create("image.send", "INFO", {"i": i}) for i in range(5)]:
            strategy.emit(note)
        assert not strategy.flush(3)
        stats = strategy.stats()
    assert (stats["sent"], stats["queued"]) == (0, 5), stats  # kept, not counted as sent
    assert exchange in stats["last_error"] and user in stats["last_error"], stats["last_error"]
