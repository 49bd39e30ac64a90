"""An AMQP 1.0 peer that settles each message as a test decides (python-qpid-proton).

RabbitMQ's AMQP 1.0 plugin accepts every message it can route, so the other outcomes a
broker may give (``received`` first, ``rejected``, ``released``, ``modified``) are
played by this listener on 127.0.0.1 (a free port), in a daemon thread.

Usage::

    with Peer(lambda body: "received-then-accept") as peer:
        QpidStrategy(qpid_hostname="127.0.0.1", qpid_port=peer.port)
        ...
        peer.received  # the notifications' message ids, in order of arrival
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import proton
from proton.handlers import MessagingHandler
from proton.reactor import Container

from tests.support.rabbitmq import free_port

#: What the peer does with a message: "accept", "reject", "release", "modify", or
#: "received-then-accept" (the non-terminal state first, the outcome 0.2 s later).
Verdict = Callable[[dict[str, Any]], str]


class Peer(MessagingHandler):  # type: ignore[misc]
    def __init__(self, decide: Verdict) -> None:
        super().__init__(prefetch=0, auto_accept=False)
        self.decide = decide
        self.port = free_port()
        self.received: list[str] = []
        self._ready = threading.Event()
        self._container = Container(self)
        self._thread = threading.Thread(target=self._container.run, daemon=True)

    def __enter__(self) -> Peer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the AMQP 1.0 peer did not start listening")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._container.stop()
        self._thread.join(10)

    def on_start(self, event: Any) -> None:
        self._acceptor = event.container.listen(f"127.0.0.1:{self.port}")
        self._ready.set()

    def on_link_opened(self, event: Any) -> None:
        if event.link.is_receiver:
            event.link.flow(100)

    def on_message(self, event: Any) -> None:
        event.receiver.flow(1)
        body = json.loads(bytes(event.message.body))
        self.received.append(body["message_id"])
        verdict, delivery = self.decide(body), event.delivery
        if verdict == "accept":
            self.accept(delivery)
        elif verdict == "reject":
            delivery.local.condition = proton.Condition("amqp:precondition-failed", "refused")
            self.reject(delivery)
        elif verdict == "release":
            self.release(delivery, delivered=False)
        elif verdict == "modify":
            self.release(delivery, delivered=True)
        elif verdict == "received-then-accept":
            delivery.update(proton.Delivery.RECEIVED)
            event.container.schedule(0.2, _Accept(delivery))
        else:
            raise ValueError(f"unknown verdict {verdict!r}")


class _Accept:
    def __init__(self, delivery: Any) -> None:
        self.delivery = delivery

    def on_timer_task(self, event: Any) -> None:
        self.delivery.update(proton.Delivery.ACCEPTED)
        self.delivery.settle()
