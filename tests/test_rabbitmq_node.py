"""The RabbitMQ harness itself: real nodes speak AMQP 0-9-1, AMQP 1.0 and TLS.

These tests prove what the broker tests of the strategies rely on: kombu and proton
reach the node, durable data survives a stop and a crash, TLS works for both clients,
and bad credentials or vhosts are refused the way the strategies must report them.
"""

from __future__ import annotations

import ssl
import time
import uuid
from typing import TYPE_CHECKING, Any

import amqp.exceptions
import pytest
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from tests.support.rabbitmq import TLS_SERVER_NAME, RabbitNode

if TYPE_CHECKING:
    from tests.support.rabbitmq_fixtures import NodeFactory

# Harmless when the root conftest.py loads the plugin too; lets this file run alone.

pytestmark = pytest.mark.broker

proton = pytest.importorskip("proton")
proton_utils = pytest.importorskip("proton.utils")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _get_body(url: str, queue: str, **conn_kwargs: Any) -> bytes | None:
    """Fetch one message from ``queue`` (basic.get, acked) and return its raw body."""
    with Connection(url, **conn_kwargs) as conn:
        message = conn.default_channel.basic_get(queue, no_ack=True)
        return None if message is None else bytes(message.body)


def _get_body_eventually(url: str, queue: str, tries: int = 50) -> bytes | None:
    for _ in range(tries):
        body = _get_body(url, queue)
        if body is not None:
            return body
        time.sleep(0.05)
    return None


def _declare(url: str, queue: Queue) -> None:
    with Connection(url) as conn:
        queue.bind(conn.default_channel).declare()


def _publish(url: str, body: bytes, queue: Queue, *, confirm: bool = False) -> None:
    options = {"confirm_publish": True} if confirm else {}
    with Connection(url, transport_options=options) as conn:
        conn.Producer().publish(
            body,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            content_type="application/json",
            content_encoding="binary",
            delivery_mode=2,
            declare=[queue],
        )


def test_kombu_publishes_and_consumes(rabbit_node: RabbitNode) -> None:
    queue = Queue(_name("plain"), Exchange(_name("ex"), "topic"), routing_key="a.b")
    _publish(rabbit_node.url, b'{"n": 1}', queue)
    assert _get_body(rabbit_node.url, queue.name) == b'{"n": 1}'


def test_amqp1_message_from_proton_reaches_kombu(rabbit_node: RabbitNode) -> None:
    key = _name("some.key")
    queue = Queue(_name("from-amqp1"), Exchange("amq.topic", "topic"), routing_key=key)
    _declare(rabbit_node.url, queue)
    conn = proton_utils.BlockingConnection(rabbit_node.amqp1_url, timeout=10)
    try:
        sender = conn.create_sender(f"/exchange/amq.topic/{key}")
        sender.send(proton.Message(body=b'{"via": "amqp1"}', inferred=True))
    finally:
        conn.close()
    assert _get_body_eventually(rabbit_node.url, queue.name) == b'{"via": "amqp1"}'


def test_durable_message_survives_stop_and_crash(
    fresh_rabbit_node: NodeFactory, rabbit_node: RabbitNode
) -> None:
    node = fresh_rabbit_node()
    assert node.port != rabbit_node.port and rabbit_node.running  # two nodes at once
    queue = Queue(_name("durable"), Exchange(_name("ex"), "topic", durable=True),
                  routing_key="k", durable=True)  # fmt: skip
    _publish(node.url, b"before stop", queue)
    url = node.url
    node.stop()
    assert not node.running
    node.start()
    assert node.url == url
    assert _get_body(node.url, queue.name) == b"before stop"

    _publish(node.url, b"before crash", queue, confirm=True)
    node.kill()
    node.start()
    assert _get_body(node.url, queue.name) == b"before crash"


def test_kombu_connects_over_tls(rabbit_tls_node: RabbitNode) -> None:
    tls = {"ca_certs": str(rabbit_tls_node.ca_file), "cert_reqs": ssl.CERT_REQUIRED}
    queue = Queue(_name("tls"), Exchange(_name("ex"), "direct"), routing_key="k")
    with Connection(rabbit_tls_node.tls_url, ssl=tls) as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.transport.client.ssl  # really the TLS listener
        queue.bind(conn.default_channel).declare()
        conn.Producer().publish(b"secret", exchange=queue.exchange, routing_key="k")
    assert _get_body_eventually(rabbit_tls_node.url, queue.name) == b"secret"


def test_proton_connects_over_tls(rabbit_tls_node: RabbitNode) -> None:
    queue = Queue(_name("tls1"), Exchange("amq.topic", "topic"), routing_key="tls.key")
    _declare(rabbit_tls_node.url, queue)
    domain = proton.SSLDomain(proton.SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(str(rabbit_tls_node.ca_file))
    domain.set_peer_authentication(proton.SSLDomain.VERIFY_PEER_NAME)
    # proton matches the peer name against DNS names only (not IP SANs): name it.
    conn = proton_utils.BlockingConnection(
        rabbit_tls_node.amqp1_tls_url,
        ssl_domain=domain,
        timeout=10,
        virtual_host=TLS_SERVER_NAME,
    )
    try:
        sender = conn.create_sender("/exchange/amq.topic/tls.key")
        sender.send(proton.Message(body=b"over tls", inferred=True))
    finally:
        conn.close()
    assert _get_body_eventually(rabbit_tls_node.url, queue.name) == b"over tls"


def test_wrong_password_is_refused(rabbit_node: RabbitNode) -> None:
    user = _name("alice")
    rabbit_node.add_user(user, "right")
    good = rabbit_node.url.replace("guest:guest", f"{user}:right")
    with Connection(good) as conn:
        conn.connect()
    bad = rabbit_node.url.replace("guest:guest", f"{user}:wrong")
    with pytest.raises(amqp.exceptions.AccessRefused), Connection(bad) as conn:
        conn.connect()


def test_unknown_vhost_is_refused(rabbit_node: RabbitNode) -> None:
    vhost = _name("vh")
    rabbit_node.add_vhost(vhost)
    with Connection(rabbit_node.url[:-1] + vhost) as conn:
        conn.connect()
    missing = rabbit_node.url[:-1] + _name("missing")
    with pytest.raises(amqp.exceptions.NotAllowed), Connection(missing) as conn:
        conn.connect()
