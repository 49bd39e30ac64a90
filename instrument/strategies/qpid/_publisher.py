"""The proton side of the qpid strategy: connect, attach, send a batch with credit, settle.

Imported only by the strategy inside its methods, so that
``import instrument.strategies.qpid`` works without proton.

Decisions:

* **Everything runs on the delivery worker's thread** through
  :class:`proton.utils.BlockingConnection`, used only as an event loop: no second
  thread, nothing to hand over between threads, and after ``fork()`` the engine simply
  never touches the inherited publisher again.
* **Asynchronous sends with credit, settlement as the confirm.** A batch is written
  with ``Sender.send`` as long as the link has credit (waiting for more when it has
  none), then the loop runs until the broker settled every delivery. One round trip
  per batch, not per message. What the broker accepted is done; what it *rejected* is
  refused for good (the engine drops it, logged, and counts it ``expired``); what it
  released or modified, or left unsettled when the connection failed, is sent again
  (duplicates possible, never losses; consumers deduplicate on ``message_id``).
* **No reliance on proton's reconnect** (it is off): RabbitMQ ends the *session* on
  shutdown (``amqp:internal-error``) and for a missing exchange (``amqp:not-found``)
  without closing the connection, and proton then leaves unsettled deliveries
  waiting forever. Every wait here also watches the connection, the session and the
  links for a remote close, and is bounded by ``qpid_settle_timeout``; any of these
  raises, the engine drops this connection and builds a new one (links included).
* **Closing never waits on a silent broker.** proton's ``BlockingConnection.close()``
  runs the event loop until the socket is gone, which never happens when the close
  handshake timed out against a broker that accepts and never answers (no heartbeat
  ends it: ``check()`` uses none). :class:`._connection.Connection` closes the transport itself
  after a bounded wait for the broker's close, also when the constructor gives up.
* **``qpid_connect_timeout`` bounds an attempt**: proton's open waits at most that
  long, and attaching the links gets what is left of it (the declaration through
  kombu has its own ``connect_timeout``).
* **Failover by hand** (:func:`.._broker.failover`, as for rabbit): every broker once,
  starting with the one that worked last, and for each why it failed.
* **Message**: the JSON envelope as bytes in a Data section, so AMQP 0-9-1 consumers
  of RabbitMQ get plain JSON; content type ``application/json``; ``durable``; ``id`` =
  the notification's ``message_id``; subject = routing key. Encoded by
  :mod:`._message` (the same bytes as proton's ``Message``, without its six
  encoding attempts per message), then sent as a delivery on the link.
"""

from __future__ import annotations

import collections
import functools
import importlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ...delivery import PartialDelivery
from ...events import Notification
from ...exceptions import DeliveryError, StrategyError
from .._broker import failover
from ._config import Broker, QpidTarget
from ._connection import Connection
from ._declare import declare_on_rabbitmq
from ._message import encode_message

__all__ = ["QpidPublisher", "explain"]

# proton's annotations are partial; we use it as an untyped library.
proton: Any = importlib.import_module("proton")
proton_utils: Any = importlib.import_module("proton.utils")

log = logging.getLogger("instrument.strategies.qpid")


class QpidPublisher:
    """Implements :class:`instrument.delivery.Publisher` with python-qpid-proton."""

    def __init__(self, target: QpidTarget) -> None:
        self.target = target
        self.product = ""
        self._index = 0
        self._conn: Any = None
        self._senders: dict[str, Any] = {}  # routing key -> proton Sender
        self._endpoints: list[tuple[str, Any]] = []  # see _fault

    # ------------------------------------------------------------ Publisher

    def connect(self) -> None:
        self._index = failover(
            self.target.brokers, self._index, self._open, self._reason, self.close
        )

    def publish_batch(self, batch: Sequence[Notification]) -> None:
        pending: collections.deque[Any] = collections.deque()
        outcomes: list[tuple[int, str]] = []  # each delivery's (remote state, its name)
        try:
            for notification in batch:
                key = self.target.routing_key(notification.priority)
                sender = self._senders[key]
                if sender.credit <= 0:
                    self._wait(functools.partial(_has_credit, sender), "waiting for link credit")
                delivery = sender.delivery(sender.delivery_tag())
                sender.stream(_encode(notification, key))
                sender.advance()
                pending.append(delivery)
                outcomes.append((0, ""))
            self._wait(lambda: _drain_settled(pending, outcomes), "waiting for settlement")
        except StrategyError:
            raise
        except Exception as exc:
            broker = self.target.brokers[self._index]
            raise DeliveryError(f"{broker.masked}: {explain(exc, self.target)}") from exc
        _check_outcomes(outcomes, len(batch))

    def idle(self) -> None:
        """Run the event loop once without blocking: heartbeats in and out, closes seen."""
        if self._conn is None:
            return
        container = self._conn.container
        saved, container.timeout = container.timeout, 0.0
        try:
            container.process()
        finally:
            container.timeout = saved
        fault = self._fault() or (self._conn.disconnected and "connection lost")
        if fault:
            raise DeliveryError(fault)

    def close(self) -> None:
        conn, self._conn, self._senders, self._endpoints = self._conn, None, {}, []
        if conn is None:
            return
        try:
            conn.close()  # bounded: Connection.close
        except Exception:  # the broker may be gone already: nothing to release there
            log.debug("closing the proton connection failed", exc_info=True)

    # ------------------------------------------------------------ internals

    def _open(self, broker: Broker) -> None:
        """Connect, declare and attach; opening and attaching share ``connect_timeout``."""
        deadline = time.monotonic() + self.target.connect_timeout
        self._conn = Connection.open(self.target, broker)
        properties = self._conn.conn.remote_properties or {}
        self.product = str(properties.get("product", ""))
        if self.target.declare and self.target.is_rabbitmq(self.product):
            declare_on_rabbitmq(self.target, broker)
        left = deadline - time.monotonic()
        if left <= 0:
            raise proton.Timeout(
                f"attaching links: no time left of {self.target.connect_timeout:g} s"
            )
        self._attach(self.target.addresses(self.product), left)

    def _reason(self, broker: Broker, exc: Exception) -> str:
        return f"{broker.masked}: {explain(exc, self.target)}"

    def _attach(self, addresses: dict[str, str], timeout: float) -> None:
        links = {
            address: self._conn.container.create_sender(self._conn.conn, address)
            for address in sorted(set(addresses.values()))
        }
        self._senders = {key: links[address] for key, address in addresses.items()}
        self._endpoints = []
        remote_uninit = proton.Endpoint.REMOTE_UNINIT
        self._wait(
            lambda: all(not link.state & remote_uninit for link in links.values()),
            f"attaching to {', '.join(links)}",
            timeout,
        )

    def _wait(self, done: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        timeout = self.target.settle_timeout if timeout is None else timeout
        try:
            self._conn.wait(lambda: done() or self._fault() is not None, timeout=timeout, msg=what)
        except proton.Timeout:
            raise DeliveryError(
                f"no answer from the broker within {timeout:g} s ({what})"
            ) from None
        fault = self._fault()
        if fault:
            raise DeliveryError(fault)

    def _fault(self) -> str | None:
        """Why the connection, its session or a link was closed by the broker, if it was.

        It is asked after every turn of the event loop while a batch settles, so the
        endpoints to look at are listed once per connection (``_watch``).
        """
        remote_closed = proton.Endpoint.REMOTE_CLOSED
        for what, endpoint in self._endpoints or self._watch():
            if endpoint.state & remote_closed:
                return _closed(what, endpoint.remote_condition, self.target)
        return None

    def _watch(self) -> list[tuple[str, Any]]:
        """The connection, its sessions and its links, named for error messages."""
        links = list({id(sender): sender for sender in self._senders.values()}.values())
        sessions = {id(link.session): link.session for link in links}
        endpoints = [("connection", self._conn.conn), *(("session", s) for s in sessions.values())]
        endpoints += [(f"link to {link.target.address}", link) for link in links]
        if self._senders:  # complete once the links exist; until then, recompute
            self._endpoints = endpoints
        return endpoints


def _encode(notification: Notification, routing_key: str) -> bytes:
    return encode_message(
        notification.to_bytes(),
        notification.message_id,
        routing_key,
        int(time.time() * 1000),
    )


def _has_credit(sender: Any) -> bool:
    return bool(sender.credit > 0)


def _drain_settled(pending: collections.deque[Any], outcomes: list[tuple[int, str]]) -> bool:
    """Pop deliveries the broker settled (in order) and note their outcomes: the remote
    state, and for one not accepted the outcome's name with the broker's reason.

    Only an outcome ends a delivery: ``received`` (a peer saying how much it has so far)
    is not one, and is waited past.
    """
    done = len(outcomes) - len(pending)
    while pending and (pending[0].remote_state in _OUTCOMES or pending[0].settled):
        delivery = pending.popleft()
        state = delivery.remote_state
        accepted = state == proton.Delivery.ACCEPTED
        outcomes[done] = (state, "" if accepted else _outcome_name(delivery))
        done += 1
        delivery.settle()
    return not pending


def _check_outcomes(outcomes: list[tuple[int, str]], size: int) -> None:
    """Return if every delivery was accepted; else raise, with what was settled for good
    (accepted, or rejected: never to be sent again) when there is any."""
    refused = [name for state, name in outcomes if state != proton.Delivery.ACCEPTED]
    if not refused:
        return
    reasons = ", ".join(sorted(set(refused)))
    message = f"the broker did not accept {len(refused)} of {size} messages: {reasons}"
    accepted = [i for i, (state, _) in enumerate(outcomes) if state == proton.Delivery.ACCEPTED]
    rejected = [i for i, (state, _) in enumerate(outcomes) if state == proton.Delivery.REJECTED]
    if accepted or rejected:
        raise PartialDelivery(message, accepted, rejected)
    raise DeliveryError(message)


#: The terminal delivery states of AMQP 1.0 (3.4): the outcomes.
_OUTCOMES = frozenset(
    {
        proton.Delivery.ACCEPTED,
        proton.Delivery.REJECTED,
        proton.Delivery.RELEASED,
        proton.Delivery.MODIFIED,
    }
)
_OUTCOME_NAMES = {
    proton.Delivery.REJECTED: "rejected",
    proton.Delivery.RELEASED: "released",
    proton.Delivery.MODIFIED: "modified",
}


def _outcome_name(delivery: Any) -> str:
    """``rejected (amqp:…: why)``, ``released``, …: what an operator can look up."""
    name = _OUTCOME_NAMES.get(delivery.remote_state, "settled without an outcome")
    condition = _condition_text(getattr(delivery.remote, "condition", None))
    return f"{name} ({condition})" if condition else name


def _condition_text(condition: Any) -> str:
    """An AMQP error condition as text; never raises (RabbitMQ 3.x may send a description
    that is not valid UTF-8, which proton fails to decode)."""
    if condition is None:
        return ""
    try:
        return f"{condition.name}: {condition.description}"
    except Exception:  # the broker's text only
        return "a condition that could not be decoded"


def _closed(what: str, condition: Any, target: QpidTarget) -> str:
    if condition is None:
        return f"the broker closed the {what}"
    text = f"the broker closed the {what}: {_condition_text(condition)}"
    if getattr(condition, "name", None) == "amqp:not-found":
        text += (
            f"; does exchange {target.exchange!r} exist? RabbitMQ's AMQP 1.0 plugin cannot "
            "create exchanges: keep qpid_declare on (needs kombu) or declare it yourself"
        )
    return text


def explain(exc: BaseException, target: QpidTarget) -> str:
    """Say what is wrong, for an operator, with no password in it."""
    return target.scrub(_explain(exc, target))


def _explain(exc: BaseException, target: QpidTarget) -> str:
    text = str(exc)
    if isinstance(exc, StrategyError):
        return text
    if "unauthorized-access" in text or "Authentication failed" in text:
        users = sorted({b.user or "(anonymous)" for b in target.brokers})
        return (
            f"authentication failed for user {', '.join(users)} (check qpid_username, "
            f"qpid_password, qpid_sasl_mechanisms): {text}"
        )
    if "Connection refused" in text:
        return f"connection refused (is the broker running and listening there?): {text}"
    if "SSL" in text or "certificate" in text or "TLS" in text:
        return f"TLS handshake failed (check qpid_ssl_* files and the server name): {text}"
    if isinstance(exc, proton.Timeout):
        return f"timed out after {target.connect_timeout:g} s: {text}"
    return f"{type(exc).__name__}: {text}"
