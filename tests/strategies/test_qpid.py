"""The qpid strategy (AMQP 1.0, proton) against real RabbitMQ nodes with the AMQP 1.0 plugin.

Tests use their own exchange and topic on the shared node (except the cross-protocol
test, which checks Glance's defaults), so they never see each other's messages. The
outage and restart tests share one private node that the first starts late and the
second restarts. What is read back is read by kombu (AMQP 0-9-1) or proton consumers.
"""

from __future__ import annotations

import contextlib
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
from typing import Any

import pytest

from instrument.events import Notification
from instrument.exceptions import ConfigError, StrategyError
from instrument.strategies.qpid import QpidStrategy
from tests.support.blackhole import serve
from tests.support.consume import consume, ids
from tests.support.rabbitmq import TLS_SERVER_NAME, RabbitError, RabbitNode, free_port
from tests.support.rabbitmq_fixtures import broker_unavailable
from tests.support.waiting import paced_emit, wait_until

kombu = pytest.importorskip("kombu")
proton = pytest.importorskip("proton")
proton_utils = pytest.importorskip("proton.utils")

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "qpid_reconnect_interval_min": 0.05,
    "qpid_reconnect_interval_max": 0.5,
    "close_timeout": 1.0,
}


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"qpid_notification_exchange": f"glance-{tag}", "qpid_notification_topic": f"n-{tag}"}


@pytest.fixture
def strategies() -> Iterator[list[QpidStrategy]]:
    made: list[QpidStrategy] = []
    yield made
    for strategy in made:
        strategy.close()


@pytest.fixture(scope="module")
def late_node(pytestconfig: pytest.Config) -> Iterator[RabbitNode]:
    """A private node, not started: the outage test starts it, the restart test restarts it."""
    try:
        from tests.support.rabbitmq import ensure_installed

        ensure_installed()
    except (RabbitError, OSError) as exc:
        broker_unavailable(pytestconfig, str(exc))
    node = RabbitNode()
    yield node
    node.close()


def start(made: list[QpidStrategy], **options: Any) -> QpidStrategy:
    strategy = QpidStrategy(**{**FAST, **options})
    made.append(strategy)
    return strategy


def on(node: RabbitNode) -> dict[str, Any]:
    return {"qpid_hostname": "127.0.0.1", "qpid_port": node.port}


def notes(n: int, priority: str = "INFO") -> list[Notification]:
    return [Notification.create("image.send", priority, {"i": i}) for i in range(n)]


# --------------------------------------------------------------------------- no broker


def test_options_have_glances_names_and_defaults() -> None:
    defaults = {option.name: option.default for option in QpidStrategy.options}
    glance = {
        "qpid_hostname": "localhost",
        "qpid_port": 5672,
        "qpid_username": "",
        "qpid_password": "",
        "qpid_sasl_mechanisms": "",
        "qpid_protocol": "tcp",
        "qpid_heartbeat": 5.0,
        "qpid_reconnect_timeout": 0.0,
        "qpid_reconnect_limit": 0,
        "qpid_reconnect_interval_min": 0.0,
        "qpid_reconnect_interval_max": 0.0,
        "qpid_reconnect_interval": 0.0,
        "qpid_notification_exchange": "glance",
        "qpid_notification_topic": "notifications",
    }
    assert defaults | glance == defaults
    transport = next(o for o in QpidStrategy.options if o.name == "qpid_transport_url")
    assert transport.aliases == ("transport_url",) and transport.secret


def test_transport_url_lists_brokers_for_failover_and_masks_passwords() -> None:
    url = "amqp://u:s3cret@h1:5673;amqps://h2,v:p2@h3/"
    with QpidStrategy(qpid_transport_url=url, qpid_username="dflt") as strategy:
        brokers = strategy.target.brokers
        assert [(b.host, b.port, b.tls, b.user) for b in brokers] == [
            ("h1", 5673, False, "u"),
            ("h2", 5671, True, "dflt"),
            ("h3", 5671, True, "v"),
        ]
        assert "s3cret" not in repr(strategy) and "p2" not in repr(strategy)
        assert strategy.target.scrub("x s3cret y") == "x **** y"


def test_ssl_is_never_silently_ignored() -> None:
    with QpidStrategy(qpid_protocol="ssl", qpid_transport_url="amqp://h1") as strategy:
        assert strategy.target.brokers[0].tls  # amqp:// upgraded, not sent in clear
    with pytest.raises(ConfigError, match="TLS files are set"):
        QpidStrategy(qpid_ssl_ca_file="/ca.pem")
    with pytest.raises(ConfigError, match="qpid_address"):
        QpidStrategy(qpid_address="/exchange/{nope}")
    for stray in ("/exchange/{exchange.upper}", "/exchange/{exchange.nope}", "/{topic[0]}"):
        with pytest.raises(ConfigError, match="qpid_address"):
            QpidStrategy(qpid_address=stray)


def test_glance_reconnect_options_map_onto_the_retry_schedule() -> None:
    def schedule(**options: Any) -> tuple[int, float, float]:
        with QpidStrategy(**options) as strategy:
            sender = strategy._delivery._worker._sender  # the retry schedule lives there
            return sender._max_retries, sender._initial_backoff, sender._max_backoff

    assert schedule() == (0, 1.0, 30.0)
    assert schedule(qpid_reconnect_interval=3, qpid_reconnect_limit=4) == (4, 3.0, 3.0)
    attempts_at_0_1_3_7_s = (4, 1.0, 30.0)
    assert (
        schedule(qpid_reconnect_interval_min=1, qpid_reconnect_timeout=7) == attempts_at_0_1_3_7_s
    )


def test_import_and_config_error_without_proton() -> None:
    code = """
        import sys
        sys.modules["proton"] = None
        import instrument.strategies.qpid as qpid
        from instrument.config import Settings
        try:
            qpid.QpidStrategy.from_settings(Settings({}))
        except Exception as exc:
            print(type(exc).__name__, exc)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True
    )
    assert "ConfigError" in out.stdout and "pip install 'instrument[qpid]'" in out.stdout


# --------------------------------------------------------------------------- wire format


@pytest.mark.broker
def test_glance_defaults_reach_kombu_and_proton_consumers(
    rabbit_node: RabbitNode, strategies: list[QpidStrategy]
) -> None:
    strategy = start(strategies, **on(rabbit_node))  # exchange glance, topic notifications
    strategy.check(10)  # declares exchange glance and queues notifications.*
    with kombu.Connection(rabbit_node.url) as conn:
        exchange = kombu.Exchange("glance", "topic", durable=False)
        mine = kombu.Queue(f"q-{uuid.uuid4().hex}", exchange, routing_key="notifications.info",
                           exclusive=True)  # fmt: skip
        with conn.SimpleQueue(mine, no_ack=True) as queue:
            info, warn = notes(1, "INFO")[0], notes(1, "WARN")[0]
            strategy.emit(info)
            strategy.emit(warn)
            assert strategy.flush(10)
            message = queue.get(timeout=10)
    assert json.loads(message.body) == info.to_dict()  # plain JSON, no AMQP 1.0 encoding
    assert message.content_type == "application/json"
    assert message.delivery_info["routing_key"] == "notifications.info"
    assert message.properties["message_id"] == info.message_id
    assert message.properties["delivery_mode"] == 2
    received = _proton_receive(rabbit_node.amqp1_url, "/amq/queue/notifications.warn", warn)
    assert json.loads(bytes(received.body)) == warn.to_dict()  # a Data section
    assert (received.content_type, received.subject) == ("application/json", "notifications.warn")
    assert received.durable


def _proton_receive(url: str, source: str, wanted: Notification) -> Any:
    connection = proton_utils.BlockingConnection(url, timeout=10)
    try:
        receiver = connection.create_receiver(source, credit=100)
        while True:
            message = receiver.receive(timeout=10)
            receiver.accept()
            if message.id == wanted.message_id:
                return message
    finally:
        connection.close()


@pytest.mark.broker
def test_routing_key_in_the_address_template(
    rabbit_node: RabbitNode, names: dict[str, str], strategies: list[QpidStrategy]
) -> None:
    template = "/exchange/{exchange}/{routing_key}"
    strategy = start(strategies, **on(rabbit_node), qpid_address=template, **names)
    sent = [*notes(2, "INFO"), *notes(1, "ERROR")]
    for note in sent:
        strategy.emit(note)
    assert strategy.flush(10)
    got = consume(rabbit_node.url, names["qpid_notification_topic"], expect=3)
    topic = names["qpid_notification_topic"]
    assert sorted((m["routing_key"], ids([m])[0]) for m in got) == sorted(
        (f"{topic}.{n.priority.lower()}", n.message_id) for n in sent
    )


@pytest.mark.broker
def test_the_virtual_host_of_the_transport_url_is_the_one_published_to(
    rabbit_node: RabbitNode, names: dict[str, str], strategies: list[QpidStrategy]
) -> None:
    """A user allowed only on its own virtual host: declared and published there (the
    path of ``qpid_transport_url`` was ignored, and every attempt was refused on ``/``)."""
    tag = uuid.uuid4().hex[:8]
    vhost, user = f"vh-{tag}", f"u-{tag}"
    rabbit_node.ctl("add_vhost", vhost)
    rabbit_node.ctl("add_user", user, "pw")
    rabbit_node.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    try:
        url = f"amqp://{user}:pw@127.0.0.1:{rabbit_node.port}/{vhost}"
        strategy = start(strategies, qpid_transport_url=url, **names)
        sent = notes(3)
        for note in sent:
            strategy.emit(note)
        assert strategy.flush(20), strategy.stats()
        in_vhost = f"amqp://{user}:pw@127.0.0.1:{rabbit_node.port}/{vhost}"
        got = consume(in_vhost, names["qpid_notification_topic"], expect=3)
        assert sorted(ids(got)) == sorted(n.message_id for n in sent)
    finally:
        rabbit_node.ctl("delete_vhost", vhost)
        rabbit_node.ctl("delete_user", user)


@pytest.mark.broker
def test_missing_exchange_is_explained_and_recovered_from(
    rabbit_node: RabbitNode, names: dict[str, str], strategies: list[QpidStrategy]
) -> None:
    strategy = start(strategies, **on(rabbit_node), qpid_declare=False, **names)
    with pytest.raises(StrategyError, match=r"amqp:not-found.*does exchange 'glance-"):
        strategy.check(5)
    note = notes(1)[0]
    strategy.emit(note)
    wait_until(lambda: strategy.stats()["failures"] >= 2, 10)
    assert "amqp:not-found" in strategy.stats()["last_error"]
    topic = names["qpid_notification_topic"]
    with kombu.Connection(rabbit_node.url) as conn:  # an operator declares it now
        exchange = kombu.Exchange(names["qpid_notification_exchange"], "topic", durable=False)
        for key in (f"{topic}.info", f"{topic}.warn", f"{topic}.error"):
            kombu.Queue(key, exchange, routing_key=key)(conn).declare()
    assert strategy.flush(10)
    assert ids(consume(rabbit_node.url, topic, expect=1)) == [note.message_id]


# --------------------------------------------------------------------------- outages


@pytest.mark.broker
def test_outage_from_the_start_costs_requests_nothing_and_loses_nothing(
    late_node: RabbitNode, names: dict[str, str], strategies: list[QpidStrategy]
) -> None:
    assert not late_node.running
    strategy = start(strategies, **on(late_node), **names)
    sent = notes(1000)
    for note in sent:  # only enqueues; test_delivery proves emit never waits on a broker
        strategy.emit(note)
    assert strategy.stats()["accepted"] == 1000
    time.sleep(0.3)
    assert strategy.stats()["sent"] == 0 and strategy.stats()["failures"] >= 1
    late_node.start()
    assert strategy.flush(60)
    got = consume(late_node.url, names["qpid_notification_topic"], expect=1000)
    assert set(ids(got)) == {n.message_id for n in sent}


@pytest.mark.broker
def test_restart_mid_stream_of_10000_loses_none(
    late_node: RabbitNode, names: dict[str, str], strategies: list[QpidStrategy]
) -> None:
    late_node.start()  # no-op when the outage test already started it
    strategy = start(strategies, **on(late_node), qpid_durable_queues=True, **names)
    sent = notes(10000)
    emitter = threading.Thread(target=paced_emit, args=(strategy, sent, 4000))
    emitter.start()
    wait_until(lambda: strategy.stats()["sent"] >= 2500, 30)
    late_node.stop()  # RabbitMQ ends the AMQP 1.0 session (amqp:internal-error)
    confirmed_before_stop = strategy.stats()["sent"]
    late_node.start()
    emitter.join()
    assert strategy.flush(60)
    got = consume(late_node.url, names["qpid_notification_topic"], expect=10000)
    assert set(ids(got)) == {n.message_id for n in sent}
    assert len(got) - 10000 <= 2 * strategy.config["batch_size"]  # the in-flight window only
    assert confirmed_before_stop < 10000 and strategy.stats()["failures"] >= 1


@pytest.mark.broker
def test_killed_process_outbox_is_delivered_by_the_next_process(
    tmp_path: Path, rabbit_node: RabbitNode, names: dict[str, str], strategies: list[QpidStrategy]
) -> None:
    outbox = str(tmp_path / "outbox.sqlite")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(port=free_port(), outbox=outbox, names=names)],
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
    strategy = start(strategies, **on(rabbit_node), outbox_path=outbox, **names)
    assert strategy.flush(30)
    assert strategy.stats()["adopted"] == 500 and strategy.stats()["outbox"] == 0
    got = consume(rabbit_node.url, names["qpid_notification_topic"], expect=500)
    assert set(ids(got)) == set(emitted)


_CHILD = textwrap.dedent("""
    import time
    from instrument.events import Notification
    from instrument.strategies.qpid import QpidStrategy
    s = QpidStrategy(qpid_hostname="127.0.0.1", qpid_port={port}, outbox_path={outbox!r},
                     qpid_reconnect_interval_min=0.05, **{names!r})
    for i in range(500):
        n = Notification.create("image.send", "INFO", {{"i": i}})
        s.emit(n)
        print(n.message_id)
    while s.stats()["stored"] < 500:
        time.sleep(0.01)
    print("STORED", flush=True)
    time.sleep(60)
""")


# --------------------------------------------------------------------------- TLS, SASL


@pytest.mark.broker
@pytest.mark.parametrize("how", ["qpid_protocol", "amqps_url"])
def test_tls_with_the_self_signed_certificate(
    how: str, rabbit_tls_node: RabbitNode, names: dict[str, str], strategies: list[QpidStrategy]
) -> None:
    node = rabbit_tls_node
    tls: dict[str, Any] = {
        "qpid_ssl_ca_file": str(node.ca_file),
        "qpid_ssl_server_name": TLS_SERVER_NAME,  # proton checks DNS names, not IP SANs
    }
    if how == "qpid_protocol":
        tls.update(qpid_hostname="127.0.0.1", qpid_port=node.tls_port, qpid_protocol="ssl")
    else:
        tls.update(qpid_transport_url=node.amqp1_tls_url)
    strategy = start(strategies, **tls, **names)
    strategy.check(10)
    note = notes(1)[0]
    strategy.emit(note)
    assert strategy.flush(10)
    assert ids(consume(node.url, names["qpid_notification_topic"], expect=1)) == [note.message_id]


@pytest.mark.broker
def test_tls_with_an_untrusted_certificate_is_explained(rabbit_tls_node: RabbitNode) -> None:
    with (
        QpidStrategy(qpid_transport_url=rabbit_tls_node.amqp1_tls_url) as strategy,
        pytest.raises(StrategyError, match=r"TLS handshake failed.*certificate verify failed"),
    ):
        strategy.check(5)


@pytest.mark.broker
def test_wrong_sasl_plain_credentials_are_explained_counted_and_never_hang(
    rabbit_node: RabbitNode, caplog: pytest.LogCaptureFixture
) -> None:
    options = {
        **on(rabbit_node),
        "qpid_username": "guest",
        "qpid_password": "wr0ng-s3cret",
        "qpid_sasl_mechanisms": "PLAIN",
        "qpid_reconnect_limit": 1,
    }
    with caplog.at_level(logging.DEBUG), QpidStrategy(**options) as strategy:
        started = time.monotonic()
        with pytest.raises(StrategyError, match="authentication failed for user guest") as raised:
            strategy.check(8)
        assert time.monotonic() - started < 8
        strategy.emit(notes(1)[0])  # only enqueues: the worker meets the bad credentials
        assert strategy.flush(15)
        stats = strategy.stats()
    assert stats["failures"] == 1 and stats["expired"] == 1 and stats["sent"] == 0
    assert "authentication failed" in stats["last_error"]
    for text in (str(raised.value), caplog.text, repr(strategy), stats["last_error"]):
        assert "wr0ng-s3cret" not in text


# --------------------------------------------------------------------------- silent brokers


class FreezableProxy:
    """A TCP proxy to *port* that can stop forwarding (a broker gone silent, half-open TCP)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = threading.Event()
        self.sockets: list[Any] = []
        self.server = serve(self._connect)
        self.listen_port = self.server.getsockname()[1]

    def _connect(self, client: Any) -> None:
        import socket

        upstream = socket.create_connection(("127.0.0.1", self.port))
        self.sockets += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: Any, sink: Any) -> None:
        with contextlib.suppress(OSError):
            while True:
                while self.frozen.is_set():
                    time.sleep(0.02)
                data = source.recv(65536)
                if not data:
                    return
                while self.frozen.is_set():
                    time.sleep(0.02)
                sink.sendall(data)

    def close(self) -> None:
        self.server.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


def test_check_against_a_listener_that_never_answers_ends_in_time() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with QpidStrategy(qpid_hostname="127.0.0.1", qpid_port=port) as strategy:
            started = time.monotonic()
            with pytest.raises(StrategyError, match="timed out"):
                strategy.check(1)
            assert time.monotonic() - started < 4


@pytest.mark.broker
def test_a_broker_gone_silent_never_hangs_the_worker_in_close(
    rabbit_node: RabbitNode, names: dict[str, str], strategies: list[QpidStrategy]
) -> None:
    proxy = FreezableProxy(rabbit_node.port)
    try:
        strategy = start(
            strategies,
            qpid_hostname="127.0.0.1",
            qpid_port=proxy.listen_port,
            qpid_heartbeat=0,  # nothing but our own bounds ends a wait
            qpid_settle_timeout=1.0,
            qpid_connect_timeout=1.0,
            **names,
        )
        first, second = notes(2)
        strategy.emit(first)
        assert strategy.flush(10)
        proxy.frozen.set()
        strategy.emit(second)
        wait_until(lambda: strategy.stats()["failures"] >= 2, 20)  # timed out, closed, retried
        proxy.frozen.clear()
        assert strategy.flush(15)
    finally:
        proxy.frozen.clear()
        proxy.close()
    got = consume(rabbit_node.url, names["qpid_notification_topic"], expect=2)
    assert {first.message_id, second.message_id} <= set(ids(got))


def test_a_password_with_url_special_characters_never_leaks() -> None:
    from instrument.strategies.qpid._declare import _url

    password = "p@ss:w/rd%"
    with QpidStrategy(qpid_transport_url="amqp://u@h1:5672", qpid_password=password) as strategy:
        declare_url = _url(strategy.target.brokers[0])
        assert "p%40ss%3Aw%2Frd%25" in declare_url
        for text in (declare_url, password):
            scrubbed = strategy.target.scrub(f"kombu says: {text}")
            assert "p%40ss" not in scrubbed and password not in scrubbed, scrubbed
        assert password not in repr(strategy)


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- outcomes


def test_a_received_state_is_waited_past_to_the_outcome(strategies: list[QpidStrategy]) -> None:
    """``received`` is not an outcome: taking it for a refusal failed every batch."""
    from tests.support.amqp1_peer import Peer

    with Peer(lambda body: "received-then-accept") as peer:
        strategy = start(strategies, qpid_hostname="127.0.0.1", qpid_port=peer.port)
        sent = notes(5)
        for note in sent:
            strategy.emit(note)
        assert strategy.flush(20), strategy.stats()
        assert strategy.stats()["failures"] == 0
        assert peer.received == [n.message_id for n in sent]  # once each


def test_a_message_refused_for_good_is_dropped_and_stalls_nothing(
    strategies: list[QpidStrategy], caplog: pytest.LogCaptureFixture
) -> None:
    """One rejected message failed its whole batch forever: the accepted ones were sent
    again on every retry and nothing after it went out. Released ones go again."""
    from tests.support.amqp1_peer import Peer

    released: set[str] = set()

    def decide(body: dict[str, Any]) -> str:
        i = body["payload"]["i"]
        if i == 3:
            return "reject"
        if i == 5 and body["message_id"] not in released:
            released.add(body["message_id"])
            return "release"
        return "accept"

    with Peer(decide) as peer:
        strategy = start(strategies, qpid_hostname="127.0.0.1", qpid_port=peer.port)
        first = notes(10)
        with caplog.at_level(logging.ERROR, "instrument.delivery"):
            for note in first:
                strategy.emit(note)
            assert strategy.flush(20), strategy.stats()
            later = notes(1)[0]
            strategy.emit(later)
            assert strategy.flush(20), strategy.stats()
        stats = strategy.stats()
        assert (stats["sent"], stats["expired"], stats["queued"]) == (10, 1, 0)
        received = peer.received
        assert all(received.count(n.message_id) == 1 for n in first if n is not first[5])
        assert received.count(first[5].message_id) == 2 and later.message_id in received
        assert "refused 1 notifications for good" in caplog.text
        # the outcome, with the broker's condition
        assert "rejected (amqp:precondition-failed: refused)" in caplog.text
