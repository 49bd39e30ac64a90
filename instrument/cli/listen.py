"""Consumers for ``instrument listen``: RabbitMQ and other kombu transports, or AMQP 1.0.

A listener never steals notifications from other consumers on a real broker: it binds
a private, auto-deleted queue to the exchange with the key ``<topic>.#``. Transports
without routing (kombu's ``filesystem://`` and ``memory://``) have no such thing, so
there it reads the shared ``<topic>.info|warn|error`` queues that the rabbit strategy
declares. Bodies in the oslo.messaging ``messagingv2`` wrapper are unwrapped.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["decode", "listen_amqp1", "listen_kombu"]

Handler = Callable[[dict[str, Any]], None]
_SHARED_QUEUE_TRANSPORTS = ("filesystem", "memory")


def decode(body: Any) -> dict[str, Any] | None:
    """The notification in a message body (plain or messagingv2), or None."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body).decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    if isinstance(body, dict) and "oslo.message" in body:
        return decode(body["oslo.message"])
    return body if isinstance(body, dict) and "event_type" in body else None


def listen_kombu(
    url: str,
    on_notification: Handler,
    *,
    exchange: str = "glance",
    topic: str = "notifications",
    durable: bool = False,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    transport_options: dict[str, Any] | None = None,
    connect_timeout: float = 10.0,
) -> None:
    """Consume until *stop* is set, calling *on_notification* for each notification.

    Bodies are read raw (:func:`decode`), not by kombu's serializers: a message that is
    not a notification (pickle, bad JSON, bytes) is skipped, never the end of listening.
    """
    kombu: Any = importlib.import_module("kombu")  # partially annotated: used as untyped

    stop = stop or threading.Event()
    with kombu.Connection(
        url, transport_options=transport_options or {}, connect_timeout=connect_timeout
    ) as connection:
        connection.ensure_connection(max_retries=1, timeout=connect_timeout)
        queues = _queues(connection, kombu.Exchange, kombu.Queue, exchange, topic, durable)

        def receive(message: Any) -> None:
            notification = decode(message.body)
            if notification is not None:
                on_notification(notification)
            message.ack()

        with kombu.Consumer(connection, queues=queues, on_message=receive):
            if ready is not None:
                ready.set()
            while not stop.is_set():
                try:
                    connection.drain_events(timeout=0.2)
                except TimeoutError:
                    continue


def _queues(
    connection: Any, exchange_cls: Any, queue_cls: Any, name: str, topic: str, durable: bool
) -> list[Any]:
    # An exchange that exists already is used as it is, whatever its durability: a
    # listener must never fail on (or change) the publisher's declaration.
    exists = _exchange_exists(connection, exchange_cls, name)
    exchange = exchange_cls(name, type="topic", durable=durable, no_declare=exists)
    if connection.transport.driver_type in _SHARED_QUEUE_TRANSPORTS:
        return [
            queue_cls(f"{topic}.{level}", exchange, routing_key=f"{topic}.{level}", durable=durable)
            for level in ("info", "warn", "error")
        ]
    return [
        queue_cls(
            "", exchange, routing_key=f"{topic}.#", exclusive=True, auto_delete=True, durable=False
        )
    ]


def _exchange_exists(connection: Any, exchange_cls: Any, name: str) -> bool:
    if connection.transport.driver_type in _SHARED_QUEUE_TRANSPORTS:
        return False
    channel = connection.channel()
    try:
        exchange_cls(name, type="topic", passive=True)(channel).declare()
    except Exception:  # NotFound: the broker closed the channel
        return False
    finally:
        with contextlib.suppress(Exception):  # already closed by the broker after NotFound
            channel.close()
    return True


def listen_amqp1(
    url: str,
    on_notification: Handler,
    *,
    exchange: str = "glance",
    topic: str = "notifications",
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    address: str | None = None,
    connect_timeout: float = 10.0,
) -> None:
    """Consume over AMQP 1.0 (RabbitMQ's plugin: ``/exchange/<name>/<topic>.#``); the
    URL's path is the virtual host, named as RabbitMQ reads it (``vhost:<name>``)."""
    from proton import Timeout
    from proton.utils import BlockingConnection

    stop = stop or threading.Event()
    source = address or f"/exchange/{exchange}/{topic}.#"
    path = urlsplit(url).path
    vhost: dict[str, Any] = {"virtual_host": f"vhost:{unquote(path[1:])}"} if len(path) > 1 else {}
    connection = BlockingConnection(url, timeout=connect_timeout, **vhost)
    try:
        try:
            receiver = connection.create_receiver(source, credit=100)
        except Timeout:
            # RabbitMQ never opens a link to an exchange that does not exist.
            raise ConnectionError(
                f"cannot attach to {source}: does exchange {exchange!r} exist? "
                "(the publisher declares it; start it first)"
            ) from None
        if ready is not None:
            ready.set()
        while not stop.is_set():
            try:
                message = receiver.receive(timeout=0.2)
            except Timeout:
                continue
            receiver.accept()
            notification = decode(message.body)
            if notification is not None:
                on_notification(notification)
    finally:
        connection.close()
