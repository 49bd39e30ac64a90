"""What the rabbit and qpid strategies share: option parsing, declarations, TLS, masking.

No broker client is imported here: kombu is handed in by the caller, so this module
imports without any optional dependency.

Decisions:

* **One masker for URLs** (:func:`mask_url`) and **one scrubber for messages**
  (:func:`scrub`). A password can reach a message in three spellings: as given, and
  percent-encoded the two ways URLs are built here (``quote(p, safe="")`` and
  ``quote(p)``). :func:`secret_forms` expands every secret into all of them, so a
  password such as ``p@ss:w/rd%`` is masked wherever a library echoes a URL.
* **Glance's declarations** (:func:`declare_glance`): the topic exchange and the queues
  ``<topic>.info|warn|error`` bound with their own names, durability as configured.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..options import Option

__all__ = [
    "MASK",
    "PRIORITY_KEYS",
    "declare_glance",
    "kombu_ssl_options",
    "mask_url",
    "parse_options",
    "scrub",
    "secret_forms",
]

PRIORITY_KEYS: Final = ("info", "warn", "error")
MASK: Final = "****"


def mask_url(url: str) -> str:
    """*url* with its password (if any) replaced by ``****``; anything else unchanged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:{MASK}@{hostinfo}"))


def secret_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    """Every spelling of *secrets* a message may carry, longest first (replace in order)."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= {secret, unquote(secret), quote(secret, safe=""), quote(secret)}
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """*text* with every spelling of every secret replaced by ``****``."""
    for form in secret_forms(secrets):
        text = text.replace(form, MASK)
    return text


def parse_options(
    options: Iterable[Option], values: Mapping[str, Any], owner: str
) -> dict[str, Any]:
    """Every option's typed value: given ones parsed (validated), the others defaults."""
    known = {option.name: option for option in options}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TypeError(f"{owner}() got unknown options: {', '.join(unknown)}")
    parsed = {}
    for name, option in known.items():
        value = values.get(name)
        parsed[name] = option.default if value is None else option.parse(name, value)
    return parsed


def declare_glance(kombu: Any, channel: Any, exchange: str, topic: str, durable: bool) -> None:
    """Declare the topic exchange and ``<topic>.info|warn|error`` bound to it (kombu)."""
    topic_exchange = kombu.Exchange(exchange, "topic", durable=durable)
    topic_exchange(channel).declare()
    for key in PRIORITY_KEYS:
        name = f"{topic}.{key}"
        queue = kombu.Queue(name, topic_exchange, routing_key=name, durable=durable)
        queue(channel).declare()


def kombu_ssl_options(
    server_hostname: str | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
) -> dict[str, object]:
    """py-amqp TLS options: the certificate is verified, the host name checked."""
    options: dict[str, object] = {
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": server_hostname,
    }
    if ca_file:
        options["ca_certs"] = ca_file
    if cert_file:
        options.update(certfile=cert_file, keyfile=key_file)
    return options
