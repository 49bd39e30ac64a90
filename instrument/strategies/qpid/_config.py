"""Where and how the qpid strategy publishes: brokers, TLS, SASL, addresses (no proton here).

Decisions:

* ``qpid_transport_url`` (alias ``transport_url``) wins over ``qpid_hostname`` & co. It
  may list several brokers for failover, ``;``-separated
  (``amqp://u:p@h1:5672;amqps://h2:5671``) or in oslo.messaging's comma form
  (``amqp://u:p@h1:5672,u:p@h2:5672/``). ``amqp``/``qpid`` mean plain TCP,
  ``amqps`` TLS. Credentials given in a URL win over ``qpid_username``/``qpid_password``.
* **TLS is never silently ignored**: ``qpid_protocol = ssl`` makes every broker TLS
  (an ``amqp://`` URL included), and TLS files given while no broker uses TLS are a
  :class:`~instrument.exceptions.ConfigError`. The broker certificate is always
  verified, host name included (``qpid_ssl_server_name`` overrides the name checked
  and sent as SNI, e.g. ``localhost`` for a broker reached by IP address).
* **Addresses.** The routing key ``<topic>.<priority lowercased>`` always travels as
  the message subject. The target address is ``qpid_address`` (a template with
  ``{exchange}``, ``{topic}``, ``{routing_key}``) or, when empty, the preset of
  ``qpid_broker``: ``rabbitmq`` → ``/exchange/{exchange}`` (RabbitMQ's AMQP 1.0
  plugin routes on the subject), ``qpid`` → ``{exchange}`` (Qpid Broker-J, Dispatch
  Router, Artemis), ``auto`` → decided per connection from the broker's ``product``
  connection property (``RabbitMQ`` → rabbitmq, anything else → qpid).
* **Glance's reconnect options** map onto the delivery engine's retry:
  ``qpid_reconnect_interval`` fixes the wait between attempts, else it starts at
  ``qpid_reconnect_interval_min`` (0: 1 s) and doubles up to
  ``qpid_reconnect_interval_max`` (0: 30 s); ``qpid_reconnect_limit`` is the number of
  attempts per batch (0: forever); ``qpid_reconnect_timeout`` (with no limit) becomes
  as many attempts as that backoff schedule fits into those seconds.
* **Validated at start-up**: every URL by :func:`.._broker.check_url` (scheme, host,
  port 1-65535, IPv6 in brackets), ``qpid_hostname``/``qpid_port`` as the URL they
  make; a ConfigError names the option.
* Passwords never reach a URL that proton prints, nor ``repr(Broker)`` (the field is
  left out): they are passed separately, and
  :meth:`QpidTarget.scrub` removes them from any message, raw or percent-encoded (the
  declaration's kombu URL carries them encoded); URLs are masked by the same
  :func:`.._broker.mask_url` as rabbit's.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote

from ...exceptions import ConfigError
from .._broker import (
    MASK,
    PRIORITY_KEYS,
    bracketed,
    check_files,
    check_url,
    mask_url,
    scrub,
    split_transport_url,
)
from .._topology import Topology, check_names, quorum_arguments

__all__ = [
    "BROKERS",
    "PRESETS",
    "Broker",
    "QpidTarget",
    "parse_brokers",
    "qpid_target",
    "retry_schedule",
]

BROKERS: Final = ("auto", "rabbitmq", "qpid")
PRESETS: Final = {"rabbitmq": "/exchange/{exchange}", "qpid": "{exchange}"}
_SCHEMES: Final = {"amqp": False, "qpid": False, "amqps": True}
_MASK: Final = MASK


@dataclasses.dataclass(frozen=True)
class Broker:
    """One broker to try: where, whether TLS, and whose credentials."""

    host: str
    port: int
    tls: bool
    user: str
    password: str = dataclasses.field(repr=False)  # never shown (see masked)
    #: The virtual host a URL's path names ("": the broker's default).
    vhost: str = ""

    @property
    def url(self) -> str:
        """The URL handed to proton: no credentials in it."""
        return f"{'amqps' if self.tls else 'amqp'}://{bracketed(self.host)}:{self.port}"

    @property
    def masked(self) -> str:
        user = f"{self.user}:{_MASK}@" if self.password else (f"{self.user}@" if self.user else "")
        return f"{'amqps' if self.tls else 'amqp'}://{user}{bracketed(self.host)}:{self.port}"


@dataclasses.dataclass(frozen=True)
class QpidTarget:
    """Everything the publisher needs, resolved from the strategy's options."""

    brokers: tuple[Broker, ...]
    sasl_mechanisms: str
    exchange: str
    topic: str
    broker_kind: str
    address: str
    declare: bool
    durable_queues: bool
    heartbeat: float
    connect_timeout: float
    settle_timeout: float
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_server_name: str | None = None
    queue_arguments: tuple[tuple[str, Any], ...] = ()

    @property
    def topology(self) -> Topology:
        """The exchange and queues to adopt or create over AMQP 0-9-1 (:mod:`._declare`)."""
        return Topology(
            "qpid", self.exchange, self.topic, self.durable_queues, self.queue_arguments
        )

    def template(self, product: str) -> str:
        """The address template for a broker announcing *product*."""
        if self.address:
            return self.address
        kind = self.broker_kind
        if kind == "auto":
            kind = "rabbitmq" if product.lower().startswith("rabbitmq") else "qpid"
        return PRESETS[kind]

    def is_rabbitmq(self, product: str) -> bool:
        if self.broker_kind != "auto":
            return self.broker_kind == "rabbitmq"
        return product.lower().startswith("rabbitmq")

    def routing_key(self, priority: str) -> str:
        return f"{self.topic}.{priority.lower()}"

    def addresses(self, product: str) -> dict[str, str]:
        """Target address by routing key, for every priority."""
        template = self.template(product)
        keys = [self.routing_key(p) for p in PRIORITY_KEYS]
        return {
            key: template.format(exchange=self.exchange, topic=self.topic, routing_key=key)
            for key in keys
        }

    def scrub(self, text: str) -> str:
        """*text* with every password masked, also percent-encoded (as in a kombu URL)."""
        return scrub(text, {b.password for b in self.brokers if b.password})

    @property
    def masked_urls(self) -> str:
        return ";".join(broker.masked for broker in self.brokers)

    @property
    def hosts(self) -> int:
        return len(self.brokers)


def qpid_target(config: Mapping[str, Any]) -> QpidTarget:
    """The target of the qpid strategy's parsed options."""
    brokers = parse_brokers(config)
    exchange, topic = check_names(config, "qpid")
    if any(broker.tls for broker in brokers):  # files set without TLS: parse_brokers says
        check_files(config, ("qpid_ssl_ca_file", "qpid_ssl_cert_file", "qpid_ssl_key_file"))
    if config["qpid_ssl_cert_file"] and not config["qpid_ssl_key_file"]:
        raise ConfigError(
            "qpid_ssl_key_file",
            config["qpid_ssl_key_file"],
            "the client certificate's private key file (it may be the certificate's own file)",
        )
    return QpidTarget(
        brokers=brokers,
        sasl_mechanisms=config["qpid_sasl_mechanisms"],
        exchange=exchange,
        topic=topic,
        broker_kind=config["qpid_broker"],
        address=config["qpid_address"],
        declare=config["qpid_declare"],
        durable_queues=config["qpid_durable_queues"],
        heartbeat=config["qpid_heartbeat"],
        connect_timeout=config["qpid_connect_timeout"],
        settle_timeout=config["qpid_settle_timeout"],
        ssl_ca_file=config["qpid_ssl_ca_file"],
        ssl_cert_file=config["qpid_ssl_cert_file"],
        ssl_key_file=config["qpid_ssl_key_file"],
        ssl_server_name=config["qpid_ssl_server_name"],
        queue_arguments=quorum_arguments(config, "qpid"),
    )


def check_template(template: str) -> str:
    """Validate an address template now, not at the first publish."""
    try:
        fields = [
            field for _, field, _, _ in string.Formatter().parse(template) if field is not None
        ]
        template.format(exchange="x", topic="t", routing_key="t.info")
        # Only the names themselves: "{exchange.upper}" formats, into garbage.
        strays = [field for field in fields if field not in _TEMPLATE_FIELDS]
        if strays:
            raise KeyError(strays[0])
    except (AttributeError, KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            "qpid_address",
            template,
            f"a template using only {{exchange}}, {{topic}}, "
            f"{{routing_key}} ({type(exc).__name__}: {exc})",
        ) from None
    return template


_TEMPLATE_FIELDS: Final = frozenset({"exchange", "topic", "routing_key"})


def parse_brokers(config: Mapping[str, Any]) -> tuple[Broker, ...]:
    """The brokers of ``qpid_transport_url``, else of ``qpid_hostname``/``qpid_port``."""
    force_tls = config["qpid_protocol"] == "ssl"
    user, password = config["qpid_username"], config["qpid_password"]
    url = config["qpid_transport_url"]
    if not url:
        host, port = config["qpid_hostname"], config["qpid_port"]
        check_url("qpid_hostname", f"amqp://{bracketed(host)}:{port}")
        brokers: tuple[Broker, ...] = (Broker(host, port, force_tls, user, password),)
    else:
        brokers = tuple(
            _from_url(piece, force_tls, user, password, url)
            for piece in split_transport_url(url, hostless=False)
        )
        if not brokers:
            raise ConfigError("qpid_transport_url", _MASK, "at least one amqp:// URL")
    tls_files = [config[f"qpid_ssl_{n}_file"] for n in ("ca", "cert", "key")]
    if any(tls_files) and not any(b.tls for b in brokers):
        raise ConfigError(
            "qpid_protocol",
            config["qpid_protocol"],
            "ssl (or amqps:// URLs): TLS files are set, but no broker would be reached over TLS",
        )
    return brokers


def _from_url(url: str, force_tls: bool, user: str, password: str, whole: str) -> Broker:
    """One broker of ``qpid_transport_url`` (*whole*, shown masked in errors)."""
    parts = check_url("qpid_transport_url", url, whole=whole)
    if parts.scheme not in _SCHEMES:
        raise ConfigError("qpid_transport_url", mask_url(whole), "amqp://, amqps:// URLs")
    tls = force_tls or _SCHEMES[parts.scheme]
    return Broker(
        host=parts.hostname or "",
        port=parts.port or (5671 if tls else 5672),
        tls=tls,
        user=unquote(parts.username) if parts.username else user,
        password=unquote(parts.password) if parts.password else password,
        vhost=unquote(parts.path[1:]) if len(parts.path) > 1 else "",
    )


def retry_schedule(config: Mapping[str, Any]) -> dict[str, Any]:
    """Glance's ``qpid_reconnect*`` options as the engine's retry keyword arguments."""
    fixed = config["qpid_reconnect_interval"]
    first = fixed or config["qpid_reconnect_interval_min"] or 1.0
    longest = max(first, fixed or config["qpid_reconnect_interval_max"] or 30.0)
    limit = config["qpid_reconnect_limit"]
    timeout = config["qpid_reconnect_timeout"]
    if not limit and timeout:
        limit, waited, backoff = 1, 0.0, first
        while waited + backoff <= timeout:
            waited, limit, backoff = waited + backoff, limit + 1, min(backoff * 2, longest)
    return {"max_retries": limit, "retry_backoff": first, "retry_max_backoff": longest}
