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
* Passwords: :func:`mask_url` (shared with qpid, :mod:`._broker_common`) is the only
  way a URL reaches a log, an error or a repr, and :meth:`RabbitTarget.scrub` removes a
  password a library put into a message (raw or percent-encoded).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Final
from urllib.parse import quote, unquote, urlsplit

from ...events import Notification
from .._broker import kombu_ssl_options, mask_url, scrub

__all__ = ["ENVELOPES", "RabbitTarget", "mask_url", "split_transport_url"]

ENVELOPES: Final = ("plain", "messagingv2")


def split_transport_url(url: str) -> list[str]:
    """Every broker URL in *url* (``;`` list, oslo comma form), ``rabbit://`` → ``amqp://``."""
    urls: list[str] = []
    for piece in (p.strip() for p in url.split(";")):
        if not piece:
            continue
        scheme, sep, rest = piece.partition("://")
        scheme = "amqp" if scheme == "rabbit" else scheme
        netloc, slash, path = rest.partition("/")
        for host in netloc.split(","):
            urls.append(f"{scheme}{sep}{host}{slash}{path}")
    return urls


@dataclasses.dataclass(frozen=True)
class RabbitTarget:
    """Everything the publisher needs, resolved from the strategy's options."""

    urls: tuple[str, ...]
    userid: str
    secrets: tuple[str, ...]
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

    def encode(self, notification: Notification) -> str:
        """The message body: the envelope as JSON, or oslo.messaging's 2.0 wrapper."""
        if self.envelope == "messagingv2":
            return json.dumps({"oslo.version": "2.0", "oslo.message": notification.to_json()})
        return notification.to_json()

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


def host_url(
    *, host: str, port: int, userid: str, password: str, virtual_host: str, use_ssl: bool
) -> str:
    """The URL of Glance's ``rabbit_host``/``rabbit_port``/... options."""
    scheme = "amqps" if use_ssl else "amqp"
    credentials = f"{quote(userid, safe='')}:{quote(password, safe='')}"
    return f"{scheme}://{credentials}@{host}:{port}/{quote(virtual_host, safe='')}"


def url_secrets(urls: tuple[str, ...], *extra: str) -> tuple[str, ...]:
    """The passwords in *urls* (raw and percent-decoded) plus *extra*."""
    found = {p for url in urls if (p := urlsplit(url).password)}
    found |= {unquote(p) for p in found}
    return tuple(sorted({*found, *(e for e in extra if e)}, key=len, reverse=True))
