"""The rabbit strategy against real RabbitMQ nodes (see tests/support/rabbitmq.py).

Every test uses its own exchange and topic on the shared node, so they never see each
other's messages; tests that stop brokers get their own nodes. What is read back is
read by plain kombu consumers or by oslo.messaging's NotificationListener.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from instrument.events import Notification
from instrument.exceptions import ConfigError, StrategyError
from instrument.strategies.rabbit import RabbitStrategy
from tests.support.consume import consume, ids
from tests.support.rabbitmq import free_port
from tests.support.waiting import paced_emit, wait_until

kombu = pytest.importorskip("kombu")

if TYPE_CHECKING:
    from tests.support.rabbitmq import RabbitNode
    from tests.support.rabbitmq_fixtures import NodeFactory

pytest_plugins = ["tests.support.rabbitmq_fixtures"]

ROOT = Path(__file__).resolve().parents[2]
FAST = {"rabbit_retry_backoff": 0.05, "rabbit_retry_max_backoff": 0.5, "close_timeout": 1.0}


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "rabbit_notification_exchange": f"glance-{tag}",
        "rabbit_notification_topic": f"n-{tag}",
    }


@pytest.fixture
def strategies() -> Iterator[list[RabbitStrategy]]:
    made: list[RabbitStrategy] = []
    yield made
    for strategy in made:
        strategy.close()


def start(made: list[RabbitStrategy], **options: Any) -> RabbitStrategy:
    strategy = RabbitStrategy(**{**FAST, **options})
    made.append(strategy)
    return strategy


def notes(n: int, priority: str = "INFO") -> list[Notification]:
    return [
        Notification.create("image.send", priority, {"i": i, "bytes_sent": i}) for i in range(n)
    ]


pytestmark = pytest.mark.broker


# --------------------------------------------------------------------------- wire format


def test_glance_wire_format_read_by_a_plain_consumer(
    rabbit_node: RabbitNode, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    strategy = start(strategies, rabbit_host="127.0.0.1", rabbit_port=rabbit_node.port, **names)
    big = Notification.create("image.update", "INFO", {"properties": "x" * 60_000})
    sent = [*notes(2, "INFO"), *notes(1, "WARN"), *notes(1, "ERROR"), big]  # > frame_max
    for note in sent:
        strategy.emit(note)
    assert strategy.flush(10)
    got = consume(rabbit_node.url, names["rabbit_notification_topic"], expect=5)
    topic = names["rabbit_notification_topic"]
    by_id = {json.loads(m["body"])["message_id"]: m for m in got}
    assert len(got) == 5
    for note in sent:
        message = by_id[note.message_id]
        assert json.loads(message["body"]) == note.to_dict()
        assert message["routing_key"] == f"{topic}.{note.priority.lower()}"
        assert message["content_type"] == "application/json"
        assert message["delivery_mode"] == 2  # persistent, as oslo.messaging sends
        assert message["message_id"] == note.message_id
    with kombu.Connection(rabbit_node.url) as conn:  # equivalent declarations succeed
        channel = conn.channel()
        kombu.Exchange(names["rabbit_notification_exchange"], "topic", durable=False)(
            channel
        ).declare()
        kombu.Queue(f"{topic}.warn", durable=False)(channel).declare()


def test_messagingv2_envelope_wraps_the_same_notification(
    rabbit_node: RabbitNode, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    strategy = start(strategies, transport_url=rabbit_node.url, envelope="messagingv2", **names)
    note = notes(1)[0]
    strategy.emit(note)
    assert strategy.flush(10)
    (message,) = consume(rabbit_node.url, names["rabbit_notification_topic"], expect=1)
    body = json.loads(message["body"])
    assert body["oslo.version"] == "2.0"
    assert json.loads(body["oslo.message"]) == note.to_dict()


def oslo_listen(
    port: int, names: dict[str, str], expect: int, **rabbit_options: Any
) -> list[tuple[str, str, str, Any, dict[str, Any]]]:
    """What an oslo.messaging NotificationListener (Ceilometer's way of reading) on
    *names*' topic receives, up to *expect* notifications; *rabbit_options* are its
    ``[oslo_messaging_rabbit]`` settings. A listener that cannot start fails the test."""
    oslo_messaging = pytest.importorskip("oslo_messaging")
    from oslo_config import cfg

    received: list[tuple[str, str, str, Any, dict[str, Any]]] = []
    done = threading.Event()

    class Endpoint:
        def _got(self, priority: str, publisher_id: str, event_type: str, payload: Any, md: Any):
            received.append((priority, publisher_id, event_type, payload, dict(md)))
            if len(received) >= expect:
                done.set()

        def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, md: Any):
            self._got("INFO", publisher_id, event_type, payload, md)

        def warn(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, md: Any):
            self._got("WARN", publisher_id, event_type, payload, md)

        def error(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, md: Any):
            self._got("ERROR", publisher_id, event_type, payload, md)

    conf = cfg.ConfigOpts()
    url = f"rabbit://guest:guest@127.0.0.1:{port}/"
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    for option, value in rabbit_options.items():
        conf.set_override(option, value, group="oslo_messaging_rabbit")
    target = oslo_messaging.Target(
        topic=names["rabbit_notification_topic"], exchange=names["rabbit_notification_exchange"]
    )
    listener = oslo_messaging.get_notification_listener(
        transport, [target], [Endpoint()], executor="threading"
    )
    listener.start()
    try:
        assert done.wait(30), received
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()
    return received


def test_oslo_messaging_listener_reads_both_envelopes(
    rabbit_node: RabbitNode, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    plain = start(strategies, transport_url=rabbit_node.url, **names)
    wrapped = start(strategies, transport_url=rabbit_node.url, envelope="messagingv2", **names)
    sent = {}
    for strategy in (plain, wrapped):
        for priority in ("INFO", "WARN", "ERROR"):
            note = Notification.create("image.upload", priority, {"id": "42", "size": 1})
            strategy.emit(note)
            sent[note.message_id] = note
        assert strategy.flush(10)
    received = oslo_listen(rabbit_node.port, names, expect=6)
    assert len(received) == 6
    for priority, publisher_id, event_type, payload, metadata in received:
        note = sent[metadata["message_id"]]
        assert (priority, publisher_id, event_type, payload) == (
            note.priority,
            note.publisher_id,
            note.event_type,
            note.payload,
        )
        assert metadata["timestamp"] == note.timestamp


def test_quorum_queues_are_declared_as_an_oslo_listener_with_quorum_queues_expects(
    rabbit_node: RabbitNode, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    """kolla-ansible's ``rabbit_quorum_queue = true`` without durable queues: oslo makes
    the exchange durable then, and its listener refused the transient one the kit made."""
    strategy = start(strategies, transport_url=rabbit_node.url, rabbit_quorum_queue=True, **names)
    sent = notes(3)
    for note in sent:
        strategy.emit(note)
    assert strategy.flush(10)
    received = oslo_listen(rabbit_node.port, names, expect=3, rabbit_quorum_queue=True)
    assert sorted(md["message_id"] for *_, md in received) == sorted(n.message_id for n in sent)


# --------------------------------------------------------------------------- outages


def test_queues_deleted_under_a_connected_strategy_are_declared_again_and_lose_nothing(
    rabbit_node: RabbitNode,
    names: dict[str, str],
    strategies: list[RabbitStrategy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker acks a message no queue takes and drops it; published ``mandatory``, it
    comes back, and the batch goes again on a new connection that declares the queues."""
    strategy = start(strategies, transport_url=rabbit_node.url, **names)
    topic = names["rabbit_notification_topic"]
    first = notes(5)
    for note in first:
        strategy.emit(note)
    assert strategy.flush(10)
    with kombu.Connection(rabbit_node.url) as conn:
        channel = conn.channel()
        for priority in ("info", "warn", "error"):
            channel.queue_delete(f"{topic}.{priority}")
    second = notes(10)
    with caplog.at_level(logging.WARNING):
        for note in second:
            strategy.emit(note)
        assert strategy.flush(20)
    assert "NO_ROUTE" in caplog.text
    assert strategy.stats()["failures"] >= 1
    got = consume(rabbit_node.url, topic, expect=10)
    assert {n.message_id for n in second} <= set(ids(got))


def test_durable_queues_a_consumer_declared_keep_the_messages_across_a_broker_restart(
    fresh_rabbit_node: NodeFactory, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    """The kit adopts queues as they are (here durable, as Ceilometer with
    ``amqp_durable_queues`` declares them) while its own option says transient: its
    messages must be persistent, or the broker confirms them and loses them at restart."""
    node = fresh_rabbit_node()
    topic, exchange = names["rabbit_notification_topic"], names["rabbit_notification_exchange"]
    with kombu.Connection(node.url) as conn:
        channel = conn.channel()
        kombu.Exchange(exchange, "topic", durable=True)(channel).declare()
        for priority in ("info", "warn", "error"):
            queue = kombu.Queue(f"{topic}.{priority}", durable=True)
            queue(channel).declare()
    strategy = start(strategies, transport_url=node.url, **names)
    sent = notes(20)
    for note in sent:
        strategy.emit(note)
    assert strategy.flush(10)
    strategy.close()
    node.stop()
    node.start()
    got = consume(node.url, topic, expect=20)
    assert sorted(ids(got)) == sorted(n.message_id for n in sent)


def test_outage_from_the_start_costs_requests_nothing_and_loses_nothing(
    fresh_rabbit_node: NodeFactory, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    node = fresh_rabbit_node(start=False)  # ports reserved, broker not running yet
    strategy = start(strategies, transport_url=node.url, **names)
    sent = notes(1000)
    for note in sent:  # emit() only enqueues (test_delivery proves it never waits on a
        strategy.emit(note)  # stuck broker; bench_delivery measures how fast it is)
    assert strategy.stats()["sent"] == 0 and strategy.stats()["accepted"] == 1000
    node.start()
    assert strategy.flush(60)
    got = consume(node.url, names["rabbit_notification_topic"], expect=1000)
    assert set(ids(got)) == {n.message_id for n in sent}
    assert strategy.stats()["failures"] >= 1


def test_restart_mid_stream_of_10000_loses_none(
    fresh_rabbit_node: NodeFactory, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    node = fresh_rabbit_node()
    strategy = start(strategies, transport_url=node.url, rabbit_durable_queues=True, **names)
    sent = notes(10000)
    emitter = threading.Thread(target=paced_emit, args=(strategy, sent, 4000))
    emitter.start()
    wait_until(lambda: strategy.stats()["sent"] >= 2500, 30)
    node.stop()  # confirmed messages must survive in the durable queues
    confirmed_before_stop = strategy.stats()["sent"]
    node.start()
    emitter.join()
    assert strategy.flush(60)
    got = consume(node.url, names["rabbit_notification_topic"], expect=10000)
    assert set(ids(got)) == {n.message_id for n in sent}
    duplicates = len(got) - 10000
    assert duplicates <= 2 * strategy.config["batch_size"]  # only the in-flight window
    assert {m["delivery_mode"] for m in got} == {2}
    assert confirmed_before_stop < 10000 and strategy.stats()["failures"] >= 1


def test_failover_to_the_second_node_loses_none(
    fresh_rabbit_node: NodeFactory,
    rabbit_node: RabbitNode,
    names: dict[str, str],
    strategies: list[RabbitStrategy],
) -> None:
    first = fresh_rabbit_node()
    url = f"{first.url};{rabbit_node.url}"
    strategy = start(strategies, transport_url=url, rabbit_durable_queues=True, **names)
    sent = notes(2000)
    emitter = threading.Thread(target=paced_emit, args=(strategy, sent, 2000))
    emitter.start()
    wait_until(lambda: strategy.stats()["sent"] >= 500, 30)
    first.stop()
    emitter.join()
    assert strategy.flush(30)
    topic = names["rabbit_notification_topic"]
    on_second = consume(rabbit_node.url, topic, expect=1)
    first.start()  # what the first node confirmed before it stopped is still there
    on_first = consume(first.url, topic, expect=1)
    assert on_first and on_second
    assert set(ids(on_first + on_second)) == {n.message_id for n in sent}


def test_killed_process_outbox_is_delivered_by_the_next_process(
    tmp_path: Path, rabbit_node: RabbitNode, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    outbox = str(tmp_path / "outbox.sqlite")
    down = f"amqp://guest:guest@127.0.0.1:{free_port()}//"  # nothing listens there
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from instrument.events import Notification
            from instrument.strategies.rabbit import RabbitStrategy
            s = RabbitStrategy(transport_url={down!r}, outbox_path={outbox!r},
                               rabbit_retry_backoff=0.05, **{names!r})
            for i in range(500):
                n = Notification.create("image.send", "INFO", {{"i": i}})
                s.emit(n)
                print(n.message_id)
            while s.stats()["stored"] < 500:
                time.sleep(0.01)
            print("STORED", flush=True)
            time.sleep(60)
        """),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    emitted = []
    for line in child.stdout:
        if line.strip() == "STORED":
            break
        emitted.append(line.strip())
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert len(emitted) == 500
    strategy = start(strategies, transport_url=rabbit_node.url, outbox_path=outbox, **names)
    assert strategy.flush(30)
    assert strategy.stats()["adopted"] == 500 and strategy.stats()["outbox"] == 0
    got = consume(rabbit_node.url, names["rabbit_notification_topic"], expect=500)
    assert set(ids(got)) == set(emitted)


@pytest.mark.parametrize("library", ["eventlet", "gevent"])
def test_delivers_under_monkey_patching(
    library: str, rabbit_node: RabbitNode, names: dict[str, str]
) -> None:
    pytest.importorskip(library)
    patch = {"gevent": "from gevent import monkey; monkey.patch_all()",
             "eventlet": "import eventlet; eventlet.monkey_patch()"}[library]  # fmt: skip
    code = f"""
{patch}
import json, time, warnings
from instrument.events import Notification
from instrument.strategies.rabbit import RabbitStrategy
s = RabbitStrategy(transport_url={rabbit_node.url!r}, **{names!r})
for i in range(300):
    s.emit(Notification.create("image.send", "INFO", {{"i": i}}))
    time.sleep(0)
ok = s.flush(20)
print(json.dumps({{"ok": ok, "sent": s.stats()["sent"]}}))
s.close()
"""
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["sent"] == 300
    got = consume(rabbit_node.url, names["rabbit_notification_topic"], expect=300)
    assert len(set(ids(got))) == 300


# --------------------------------------------------------------------------- TLS


@pytest.mark.parametrize("how", ["rabbit_use_ssl", "amqps_url"])
def test_tls(
    how: str, rabbit_tls_node: RabbitNode, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    node = rabbit_tls_node
    tls: dict[str, Any] = {"rabbit_ssl_ca_file": str(node.ca_file)}
    if how == "rabbit_use_ssl":
        tls.update(rabbit_host="127.0.0.1", rabbit_port=node.tls_port, rabbit_use_ssl=True)
    else:
        tls.update(transport_url=node.tls_url)
    strategy = start(strategies, **tls, **names)
    strategy.check(10)
    note = notes(1)[0]
    strategy.emit(note)
    assert strategy.flush(10)
    assert ids(consume(node.url, names["rabbit_notification_topic"], expect=1)) == [note.message_id]


def test_tls_with_an_untrusted_certificate_is_explained(rabbit_tls_node: RabbitNode) -> None:
    with (
        RabbitStrategy(transport_url=rabbit_tls_node.tls_url) as strategy,
        pytest.raises(StrategyError, match=r"TLS handshake .* failed: CERTIFICATE_VERIFY"),
    ):
        strategy.check(5)


# --------------------------------------------------------------------------- confirms


def _queue_pid(queue: str) -> str:
    lookup = f'rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"{queue}">>))'
    return f"{{ok, Q}} = {lookup}, P = amqqueue:get_pid(Q)"


def test_a_nack_fails_the_batch_even_when_later_messages_were_acked_first(
    rabbit_node: RabbitNode, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    topic = names["rabbit_notification_topic"]
    strategy = start(
        strategies,
        transport_url=rabbit_node.url,
        rabbit_max_retries=2,
        batch_size=10,
        # rabbitmqctl takes seconds on a busy machine, and the queue is suspended
        # meanwhile: only the broker's nack may end the attempt
        rabbit_confirm_timeout=120,
        rabbit_connect_timeout=120,
        **names,
    )
    # The worker connects and declares now, while the queues answer.
    strategy.emit(notes(1, "ERROR")[0])
    assert strategy.flush(30) and strategy.stats()["sent"] == 1
    policy = f"reject-{topic}"
    rabbit_node.ctl(
        "set_policy", "--apply-to", "queues", policy, f"^{topic}\\.info$",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )  # fmt: skip
    try:  # the info queue answers only after the error message was acked
        rabbit_node.ctl("eval", f"{_queue_pid(topic + '.info')}, sys:suspend(P).")
        # Both in one batch: the worker takes from the intake under its lock, so
        # holding that lock while emitting keeps it from taking the first alone.
        with strategy._delivery._intake._lock:
            strategy.emit(notes(1, "INFO")[0])
            strategy.emit(notes(1, "ERROR")[0])
        wait_until(lambda: strategy.stats()["accepted"] == 3, 5)
        time.sleep(1.0)  # the error message's ack has arrived
        rabbit_node.ctl("eval", f"{_queue_pid(topic + '.info')}, sys:resume(P).")
        assert strategy.flush(15)
        stats = strategy.stats()
    finally:
        rabbit_node.ctl("eval", f"{_queue_pid(topic + '.info')}, catch sys:resume(P).")
        rabbit_node.ctl("clear_policy", policy)
    assert stats["sent"] == 1 and stats["expired"] == 2 and stats["failures"] == 2
    assert "nacked" in stats["last_error"]


def test_publish_frames_never_exceed_frame_max() -> None:
    from instrument.strategies.rabbit._frames import publish_frames

    body = b"x" * 20_000
    data = publish_frames(1, "glance", "notifications.info", body, "id", 1, 4096)
    sizes, offset = [], 0
    while offset < len(data):
        size = int.from_bytes(data[offset + 3 : offset + 7], "big") + 8
        sizes.append(size)
        offset += size
    assert max(sizes) <= 4096 and sum(sizes[2:]) - 8 * len(sizes[2:]) == len(body)


def test_without_py_amqp_internals_it_falls_back_to_basic_publish(
    rabbit_node: RabbitNode,
    names: dict[str, str],
    strategies: list[RabbitStrategy],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from instrument.strategies.rabbit import _publisher as _rabbit_publisher

    needs = ("frame_writer.write", "no_such_internal")
    monkeypatch.setattr(_rabbit_publisher, "_BATCH_NEEDS", needs)
    monkeypatch.setattr(_rabbit_publisher._warn_fallback, "done", False)
    topic = names["rabbit_notification_topic"]
    big = Notification.create("image.update", "WARN", {"properties": "x" * 60_000})
    sent = [*notes(3), big]
    with caplog.at_level(logging.WARNING, logger="instrument.strategies.rabbit"):
        strategy = start(strategies, transport_url=rabbit_node.url, **names)
        for note in sent[:2]:
            strategy.emit(note)
        assert strategy.flush(10)
        strategy.close()  # a second connection: logged once all the same
        strategy = start(strategies, transport_url=rabbit_node.url, **names)
        for note in sent[2:]:
            strategy.emit(note)
        assert strategy.flush(10)
    assert caplog.text.count("publishing through basic_publish") == 1
    assert "no_such_internal" in caplog.text
    got = {
        json.loads(m["body"])["message_id"]: m for m in consume(rabbit_node.url, topic, expect=4)
    }
    assert len(got) == 4
    for note in sent:
        message = got[note.message_id]
        assert json.loads(message["body"]) == note.to_dict()
        assert message["routing_key"] == f"{topic}.{note.priority.lower()}"
        assert (message["content_type"], message["delivery_mode"]) == ("application/json", 2)
        assert message["message_id"] == note.message_id


def test_a_memory_alarm_is_waited_out_on_one_connection(
    fresh_rabbit_node: NodeFactory, names: dict[str, str], strategies: list[RabbitStrategy]
) -> None:
    """The broker blocks publishers and stops reading: no pile of connections, none lost.

    The batch fits the socket buffers (30 x 2 KB); batches that do not are in
    ``test_alarm.py``.
    """
    node = fresh_rabbit_node()
    strategy = start(
        strategies,
        transport_url=node.url,
        rabbit_confirm_timeout=1.0,
        rabbit_connect_timeout=1.0,
        **names,
    )
    strategy.check(5)
    node.ctl("set_vm_memory_high_watermark", "0.0000001")  # memory alarm: publishers blocked
    try:
        sent = [Notification.create("image.update", "INFO", {"p": "x" * 2_000}) for _ in range(30)]
        for note in sent:
            strategy.emit(note)
        time.sleep(6)  # six confirm timeouts: each retry used to open a connection
        listed = node.ctl("list_connections", "--quiet", "--no-table-headers", "name")
    finally:
        node.ctl("set_vm_memory_high_watermark", "0.4")
    assert len(listed.strip().splitlines()) == 1, listed
    assert strategy.flush(30)
    got = consume(node.url, names["rabbit_notification_topic"], expect=30)
    assert set(ids(got)) == {n.message_id for n in sent}


# --------------------------------------------------------------------------- passwords


def test_a_password_with_url_special_characters_never_leaks() -> None:
    from instrument.strategies._broker import mask_url

    password = "p@ss:w/rd%"
    with RabbitStrategy(rabbit_password=password, rabbit_host="h") as strategy:
        url = strategy.target.urls[0]
        assert url.startswith("amqp://guest:p%40ss%3Aw%2Frd%25@h:")
        for text in (mask_url(url), repr(strategy), strategy.target.scrub(f"x {url} {password}")):
            assert "p%40ss" not in text and password not in text and "****" in text


# --------------------------------------------------------------------------- bad config


def _bad_configs(node: RabbitNode) -> list[tuple[str, dict[str, Any], str]]:
    base = {"rabbit_host": "127.0.0.1", "rabbit_port": node.port}
    return [
        ("password", {**base, "rabbit_password": "wr0ng-s3cret"}, "authentication failed"),
        ("port", {**base, "rabbit_port": free_port()}, "connection refused by 127.0.0.1:"),
        ("vhost", {**base, "rabbit_virtual_host": "no-vhost"}, "virtual host 'no-vhost' does not"),
    ]


@pytest.mark.parametrize("which", ["password", "port", "vhost"])
def test_bad_config_is_explained_by_check_and_counted_at_run_time(
    which: str, rabbit_node: RabbitNode, caplog: pytest.LogCaptureFixture
) -> None:
    (options, expected) = next((o, e) for w, o, e in _bad_configs(rabbit_node) if w == which)
    options = {**options, "rabbit_max_retries": 2, "rabbit_retry_backoff": 0.01}
    with caplog.at_level(logging.DEBUG), RabbitStrategy(**options) as strategy:
        started = time.monotonic()
        with pytest.raises(StrategyError, match=expected) as raised:
            strategy.check(5)
        assert time.monotonic() - started < 5
        strategy.emit(notes(1)[0])  # only enqueues: the worker meets the bad config
        assert strategy.flush(15)
        stats = strategy.stats()
    assert stats["failures"] == 2 and stats["expired"] == 1 and stats["sent"] == 0
    assert expected in stats["last_error"]
    for text in (str(raised.value), caplog.text, repr(strategy), stats["last_error"]):
        assert "wr0ng-s3cret" not in text


def test_check_adopts_a_queue_someone_else_declared_durable(
    rabbit_node: RabbitNode, names: dict[str, str]
) -> None:
    topic = names["rabbit_notification_topic"]
    with kombu.Connection(rabbit_node.url) as conn:  # someone made it durable before us
        kombu.Queue(f"{topic}.info", durable=True)(conn.channel()).declare()
    with RabbitStrategy(transport_url=rabbit_node.url, **names) as strategy:
        strategy.check(5)  # used as it is (tests/strategies/test_topology.py: the details)


# --------------------------------------------------------------------------- no broker


def test_memory_transport_works_without_a_broker(strategies: list[RabbitStrategy]) -> None:
    strategy = start(strategies, transport_url="memory://")
    note = notes(1, "WARN")[0]
    strategy.emit(note)
    assert strategy.flush(5)
    with kombu.Connection("memory://") as conn:
        message = conn.SimpleQueue("notifications.warn").get(timeout=5)
        assert json.loads(message.body) == note.to_dict()
        assert message.content_type == "application/json"


def test_import_and_config_error_without_kombu() -> None:
    code = """
        import sys
        sys.modules["kombu"] = None
        import instrument.strategies.rabbit as rabbit
        from instrument.config import Settings
        try:
            rabbit.RabbitStrategy.from_settings(Settings({}))
        except Exception as exc:
            print(type(exc).__name__, exc)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True
    )
    assert "ConfigError" in out.stdout and "pip install 'instrument[rabbit]'" in out.stdout


def test_options_have_glances_names_and_defaults() -> None:
    defaults = {option.name: option.default for option in RabbitStrategy.options}
    glance = {
        "rabbit_host": "localhost",
        "rabbit_port": 5672,
        "rabbit_userid": "guest",
        "rabbit_password": "guest",
        "rabbit_virtual_host": "/",
        "rabbit_use_ssl": False,
        "rabbit_notification_exchange": "glance",
        "rabbit_notification_topic": "notifications",
        "rabbit_durable_queues": False,
        "rabbit_max_retries": 0,
        "rabbit_retry_backoff": 2.0,
        "rabbit_retry_max_backoff": 30.0,
        "envelope": "plain",
    }
    assert defaults | glance == defaults
    with pytest.raises(ConfigError):
        RabbitStrategy(envelope="xml")


# --------------------------------------------------------------------------- helpers
