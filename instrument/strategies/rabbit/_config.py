"""Where and how the rabbit strategy publishes: URLs, TLS, wire format (no kombu here).

Decisions:

* ``transport_url`` wins over the ``rabbit_*`` host options. It may list several
  brokers for failover, separated by ``;`` (kombu's form,
  ``amqp://h1:5672;amqp://h2:5673``) or in oslo.messaging's comma form
  (``rabbit://u:p@h1:5672,u:p@h2:5673/vhost``, one scheme and vhost for all).
  ``rabbit://`` means ``amqp://``; any other kombu URL (``memory://``,
  ``filesystem://``, ``redis://``) is passed through.
* TLS is on for ``rabbit_use_ssl`` or an ``amqps://`` URL. With ``rabbit_ssl_ca_file``
  the broker certificate must chain to that CA, otherwise to the system's CAs; the
  host name is checked either way (py-amqp enables it with ``server_hostname``).
* Passwords: :func:`mask_url` (shared with qpid, :mod:`.._broker`) is the only
  way a URL reaches a log, an error or a repr (``RabbitTarget``'s ``urls`` and
  ``secrets`` are left out of its repr, which shows the masked URLs instead), and
  :meth:`RabbitTarget.scrub` removes a password a library put into a message (raw or
  percent-encoded).
* **Validated at start-up** (:func:`rabbit_target`): every URL of ``transport_url``
  (or the one built from ``rabbit_host``/``rabbit_port``, an IPv6 address bracketed)
  by :func:`.._broker.check_url`; the scheme must be one kombu knows; exchange and
  topic must not be empty. Each problem is a ConfigError naming its option.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import SplitResult, quote, unquote, urlsplit

from ...events import Notification
from ...exceptions import ConfigError
from .._broker import (
    MASK,
    bracketed,
    check_files,
    check_url,
    kombu_ssl_options,
    mask_url,
    scrub,
    split_transport_url,
)
from .._topology import Topology, check_names, quorum_arguments

__all__ = ["ENVELOPES", "RabbitTarget", "broker_urls", "rabbit_target"]

ENVELOPES: Final = ("plain", "messagingv2")


def broker_urls(url: str) -> list[str]:
    """Every broker URL in ``transport_url``, ``rabbit://`` read as ``amqp://``."""
    return [
        "amqp" + piece[len("rabbit") :] if piece.startswith("rabbit://") else piece
        for piece in split_transport_url(url, hostless=True)
    ]


@dataclasses.dataclass(frozen=True)
class RabbitTarget:
    """Everything the publisher needs, resolved from the strategy's options."""

    urls: tuple[str, ...] = dataclasses.field(repr=False)
    userid: str
    secrets: tuple[str, ...] = dataclasses.field(repr=False)
    exchange: str
    topic: str
    durable: bool
    envelope: str
    heartbeat: float
    connect_timeout: float
    confirm_timeout: float
    use_ssl: bool = False
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    queue_arguments: tuple[tuple[str, Any], ...] = ()

    @property
    def topology(self) -> Topology:
        """The exchange and queues to adopt or create (:mod:`.._topology`)."""
        return Topology("rabbit", self.exchange, self.topic, self.durable, self.queue_arguments)

    def encode(self, notification: Notification) -> bytes:
        """The message body: the envelope as UTF-8 JSON, or oslo.messaging's 2.0 wrapper."""
        if self.envelope == "messagingv2":
            wrapper = {"oslo.version": "2.0", "oslo.message": notification.to_json()}
            return json.dumps(wrapper).encode()
        return notification.to_bytes()

    def ssl_options(self, url: str) -> dict[str, object] | bool:
        """py-amqp TLS options for ``amqps``/``rabbit_use_ssl`` (verifying), else False."""
        if not (self.use_ssl or url.startswith("amqps://")):
            return False
        return kombu_ssl_options(
            urlsplit(url).hostname, self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file
        )

    def vhost_of(self, url: str) -> str:
        path = urlsplit(url).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    def scrub(self, text: str) -> str:
        """*text* with every password (raw or percent-encoded) masked."""
        return scrub(text, self.secrets)

    @property
    def masked_urls(self) -> str:
        return ";".join(mask_url(url) for url in self.urls)

    def __repr__(self) -> str:
        return (
            f"RabbitTarget({self.masked_urls!r}, exchange={self.exchange!r}, "
            f"topic={self.topic!r}, durable={self.durable}, envelope={self.envelope!r})"
        )

    @property
    def hosts(self) -> int:
        return len(self.urls)


def rabbit_target(config: Mapping[str, Any]) -> RabbitTarget:
    """The target of the rabbit strategy's parsed options."""
    if config["transport_url"]:
        urls = tuple(broker_urls(config["transport_url"]))
        if not urls:
            raise ConfigError("transport_url", MASK, "at least one URL")
        whole = config["transport_url"]
        for url in urls:
            parts = check_url("transport_url", url, host_needed=_is_amqp(url), whole=whole)
            _check_scheme(parts, whole)
    else:
        urls = (host_url(config),)
        check_url("rabbit_host", urls[0])
    exchange, topic = check_names(config, "rabbit")
    if config["rabbit_use_ssl"] or any(url.startswith("amqps://") for url in urls):
        check_files(config, ("rabbit_ssl_ca_file", "rabbit_ssl_cert_file", "rabbit_ssl_key_file"))
    return RabbitTarget(
        urls=urls,
        userid=config["rabbit_userid"],
        secrets=url_secrets(urls, config["rabbit_password"]),
        exchange=exchange,
        topic=topic,
        durable=config["rabbit_durable_queues"],
        envelope=config["envelope"],
        heartbeat=config["rabbit_heartbeat"],
        connect_timeout=config["rabbit_connect_timeout"],
        confirm_timeout=config["rabbit_confirm_timeout"],
        use_ssl=config["rabbit_use_ssl"],
        ssl_ca_file=config["rabbit_ssl_ca_file"],
        ssl_cert_file=config["rabbit_ssl_cert_file"],
        ssl_key_file=config["rabbit_ssl_key_file"],
        queue_arguments=quorum_arguments(config, "rabbit"),
    )


def host_url(config: Mapping[str, Any]) -> str:
    """The URL of Glance's ``rabbit_host``/``rabbit_port``/... options."""
    scheme = "amqps" if config["rabbit_use_ssl"] else "amqp"
    user, password = (quote(config[f"rabbit_{n}"], safe="") for n in ("userid", "password"))
    vhost = quote(config["rabbit_virtual_host"], safe="")
    host = bracketed(config["rabbit_host"])
    return f"{scheme}://{user}:{password}@{host}:{config['rabbit_port']}/{vhost}"


def _is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://"))


def _check_scheme(parts: SplitResult, whole: str) -> None:
    """A scheme kombu has a transport for (when kombu is there to ask); *whole* is the
    option's value, shown masked in the error."""
    try:
        from kombu.transport import TRANSPORT_ALIASES
    except ImportError:  # from_settings says which extra to install
        return
    if parts.scheme.partition("+")[0] not in TRANSPORT_ALIASES:
        raise ConfigError(
            "transport_url",
            mask_url(whole),
            "a URL whose scheme kombu has a transport for (rabbit, amqp, amqps, memory, redis …)",
        )


def url_secrets(urls: tuple[str, ...], *extra: str) -> tuple[str, ...]:
    """The passwords in *urls* (raw and percent-decoded) plus *extra*."""
    found = {p for url in urls if (p := urlsplit(url).password)}
    found |= {unquote(p) for p in found}
    return tuple(sorted({*found, *(e for e in extra if e)}, key=len, reverse=True))
