"""The ``rabbit`` strategy: Glance's RabbitMQ notifications, through kombu, never blocking.

Wire format (Glance's): a topic exchange ``rabbit_notification_exchange`` (``glance``),
routing key ``<rabbit_notification_topic>.<priority lowercased>`` (so WARN goes to
``notifications.warn``), a JSON body with content type ``application/json``, and the
queues ``notifications.info|warn|error`` declared and bound so that nothing is dropped
before a consumer starts. An exchange or queue that already exists is used as it is
(durable or not, classic, quorum or stream, any arguments), with one warning naming
how it differs; only what is missing is created: durable with
``rabbit_durable_queues`` or ``rabbit_quorum_queue`` (quorum queues, and then a durable
exchange, as oslo.messaging declares them). Messages are always persistent.
``envelope = messagingv2`` wraps the body the way oslo.messaging's ``messagingv2``
driver does; both forms are read by oslo consumers.

Decisions:

* :meth:`emit` only enqueues into :class:`~instrument.delivery.Delivery`; the broker is
  reached by its worker, with publisher confirms, retries and the optional outbox.
* kombu is imported inside methods (``._publisher``), so this module imports
  without it; :meth:`from_settings` then says which extra to install.
* :meth:`check` is the start-up check: it connects with a fresh connection, declares
  everything and raises :class:`~instrument.exceptions.StrategyError` with the reason
  for every broker tried. It never touches the delivery worker.
* No password reaches ``repr``, logs or errors: URLs are masked, messages scrubbed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from ...delivery import DELIVERY_OPTIONS, Publisher, retry_options
from ...options import Option, boolean, choice, integer, number
from .._broker import option_maker, timeout_options
from .._broker_strategy import BrokerStrategy, Client
from .._topology import quorum_options
from ._config import ENVELOPES, RabbitTarget, rabbit_target

__all__ = ["RABBIT_OPTIONS", "RabbitStrategy"]

_opt = option_maker("rabbit")

RABBIT_OPTIONS: Final = (
    _opt("rabbit_host", "localhost", "the RabbitMQ host."),
    _opt("rabbit_port", 5672, "the RabbitMQ port.", integer(1, 65535)),
    _opt("rabbit_userid", "guest", "the user name."),
    _opt("rabbit_password", "guest", "the password.", secret=True),
    _opt("rabbit_virtual_host", "/", "the virtual host."),
    _opt("rabbit_use_ssl", False, "connect with TLS (certificate verified).", boolean),
    _opt("rabbit_ssl_ca_file", None, "CA file the broker certificate must chain to."),
    _opt("rabbit_ssl_cert_file", None, "client certificate file (mutual TLS)."),
    _opt("rabbit_ssl_key_file", None, "client private key file (mutual TLS)."),
    _opt("rabbit_heartbeat", 60.0, "AMQP heartbeat in seconds; 0 disables.", number(0)),
    _opt("rabbit_notification_exchange", "glance", "the topic exchange."),
    _opt("rabbit_notification_topic", "notifications", "routing key prefix and queue names."),
    _opt(
        "rabbit_durable_queues",
        False,
        "create a missing exchange and queues durable (what exists is used as it is).",
        boolean,
    ),
    *quorum_options(_opt, "rabbit"),
    *timeout_options(_opt, "rabbit", "confirm", "confirms"),
    _opt(
        "transport_url",
        None,
        "broker URL(s) instead of rabbit_host & co: amqp://u:p@h1:5672/;amqp://u:p@h2:5673/ "
        "for failover, oslo's rabbit://u:p@h1,u:p@h2/ form, or any kombu URL (memory://).",
        secret=True,
    ),
    _opt(
        "envelope", "plain", "plain (Glance) or messagingv2 (oslo 2.0 wrapper).", choice(*ENVELOPES)
    ),
)

_OPTIONS: Final = (*RABBIT_OPTIONS, *retry_options("rabbit"), *DELIVERY_OPTIONS)


class RabbitStrategy(BrokerStrategy):
    """Publish notifications to RabbitMQ (or any kombu transport) in the background.

    Keyword arguments are the option names, e.g.
    ``RabbitStrategy(transport_url="amqp://guest:guest@broker//", rabbit_durable_queues=True)``.
    """

    name: ClassVar[str] = "rabbit"
    options: ClassVar[tuple[Option, ...]] = _OPTIONS

    client = Client("kombu", "kombu", "rabbit")

    def make_target(self, config: Mapping[str, Any]) -> RabbitTarget:
        return rabbit_target(config)

    def retry_settings(self) -> dict[str, Any]:
        return {
            "max_retries": self.config["rabbit_max_retries"],
            "retry_backoff": self.config["rabbit_retry_backoff"],
            "retry_max_backoff": self.config["rabbit_retry_max_backoff"],
        }

    def publisher(self, target: RabbitTarget) -> Publisher:
        from ._publisher import RabbitPublisher

        return RabbitPublisher(target)

    def __repr__(self) -> str:
        return f"<RabbitStrategy {self.target.masked_urls} envelope={self.target.envelope}>"
