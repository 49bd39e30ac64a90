"""The ``rabbit`` strategy: Glance's RabbitMQ notifications, through kombu, never blocking.

Wire format (Glance's): a topic exchange ``rabbit_notification_exchange`` (``glance``),
routing key ``<rabbit_notification_topic>.<priority lowercased>`` (so WARN goes to
``notifications.warn``), a JSON body with content type ``application/json``, and the
queues ``notifications.info|warn|error`` declared and bound so that nothing is dropped
before a consumer starts. With ``rabbit_durable_queues`` the exchange and queues are
durable and the messages persistent. ``envelope = messagingv2`` wraps the body the way
oslo.messaging's ``messagingv2`` driver does; both forms are read by oslo consumers.

Decisions:

* :meth:`emit` only enqueues into :class:`~instrument.delivery.Delivery`; the broker is
  reached by its worker, with publisher confirms, retries and the optional outbox.
* kombu is imported inside methods (``_rabbit_publisher``), so this module imports
  without it; :meth:`from_settings` then says which extra to install.
* :meth:`check` is the start-up check: it connects with a fresh connection, declares
  everything and raises :class:`~instrument.exceptions.StrategyError` with the reason
  for every broker tried. It never touches the delivery worker.
* No password reaches ``repr``, logs or errors: URLs are masked, messages scrubbed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from ...delivery import DELIVERY_OPTIONS, Publisher, retry_options
from ...exceptions import ConfigError
from ...options import Option, boolean, choice, integer, number, string
from .._broker import parse_options
from .._broker_strategy import BrokerStrategy
from ._config import ENVELOPES, RabbitTarget, host_url, split_transport_url, url_secrets

if TYPE_CHECKING:
    pass

__all__ = ["RABBIT_OPTIONS", "RabbitStrategy"]


def _opt(name: str, default: Any, help: str, parse: Any = string, **kw: Any) -> Option:
    return Option(name, default, f"rabbit strategy: {help}", parse, **kw)


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
        "durable exchange and queues, persistent messages (must match what exists).",
        boolean,
    ),
    _opt("rabbit_connect_timeout", 5.0, "seconds per connection attempt.", number(0.1)),
    _opt("rabbit_confirm_timeout", 15.0, "seconds to wait for a batch's confirms.", number(0.1)),
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
    asynchronous: ClassVar[bool] = True

    client = "kombu"
    package = "kombu"
    extra = "rabbit"

    def configure(self, values: Mapping[str, Any]) -> None:
        self.config = _parse(values)
        self.target = _target(self.config)

    def retry_settings(self) -> dict[str, Any]:
        return {
            "max_retries": self.config["rabbit_max_retries"],
            "retry_backoff": self.config["rabbit_retry_backoff"],
            "retry_max_backoff": self.config["rabbit_retry_max_backoff"],
        }

    def new_publisher(self) -> Publisher:
        from ._publisher import RabbitPublisher

        return RabbitPublisher(self.target)

    def check_publisher(self, timeout: float) -> Publisher:
        from ._publisher import RabbitPublisher

        return RabbitPublisher(_with_timeout(self.target, timeout))

    def __repr__(self) -> str:
        return f"<RabbitStrategy {self.target.masked_urls} envelope={self.target.envelope}>"


def _parse(values: Mapping[str, Any]) -> dict[str, Any]:
    return parse_options(_OPTIONS, values, "RabbitStrategy")


def _target(config: Mapping[str, Any]) -> RabbitTarget:
    if config["transport_url"]:
        urls = tuple(split_transport_url(config["transport_url"]))
        if not urls:
            raise ConfigError("transport_url", config["transport_url"], "at least one URL")
    else:
        urls = (
            host_url(
                host=config["rabbit_host"],
                port=config["rabbit_port"],
                userid=config["rabbit_userid"],
                password=config["rabbit_password"],
                virtual_host=config["rabbit_virtual_host"],
                use_ssl=config["rabbit_use_ssl"],
            ),
        )
    return RabbitTarget(
        urls=urls,
        userid=config["rabbit_userid"],
        secrets=url_secrets(urls, config["rabbit_password"]),
        exchange=config["rabbit_notification_exchange"],
        topic=config["rabbit_notification_topic"],
        durable=config["rabbit_durable_queues"],
        envelope=config["envelope"],
        heartbeat=config["rabbit_heartbeat"],
        connect_timeout=config["rabbit_connect_timeout"],
        confirm_timeout=config["rabbit_confirm_timeout"],
        use_ssl=config["rabbit_use_ssl"],
        ssl_ca_file=config["rabbit_ssl_ca_file"],
        ssl_cert_file=config["rabbit_ssl_cert_file"],
        ssl_key_file=config["rabbit_ssl_key_file"],
    )


def _with_timeout(target: RabbitTarget, timeout: float) -> RabbitTarget:
    import dataclasses

    per_host = max(0.1, min(target.connect_timeout, timeout / len(target.urls)))
    return dataclasses.replace(target, connect_timeout=per_host, heartbeat=0.0)
