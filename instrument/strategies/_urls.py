"""Broker URLs, shared by the rabbit and qpid strategies: split, validate, mask, scrub.

Decisions:

* **Transport URLs** (:func:`split_transport_url`): ``;``-separated (kombu's form) or
  oslo.messaging's comma form (``rabbit://u:p@h1,u:p@h2/vhost``: one scheme and path
  for all hosts).
* **Validated at start-up** (:func:`check_url`): a scheme, a host where the scheme needs
  one, a port from 1 to 65535 and IPv6 addresses in brackets, or a ConfigError that
  names the option and shows the URL masked. Nothing reaches a client library that
  would raise a ``ValueError`` at the first connection (and be retried forever).
* **One masker for URLs** (:func:`mask_url`), which never raises: a URL too broken to
  parse, or without ``scheme://``, is masked by pattern (everything between ``user:``
  and the last ``@``).
* **One scrubber for messages** (:func:`scrub`). A password can reach a message in
  three spellings: as given, and percent-encoded the two ways URLs are built here
  (``quote(p, safe="")`` and ``quote(p)``). :func:`secret_forms` expands every secret
  into all of them, so a password such as ``p@ss:w/rd%`` is masked wherever a library
  echoes a URL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import SplitResult, quote, unquote, urlsplit

from ..exceptions import ConfigError
from ..options import MASK

__all__ = [
    "bracketed",
    "check_files",
    "check_url",
    "mask_url",
    "scrub",
    "secret_forms",
    "split_transport_url",
]

# [scheme://]user:password@ up to the last @ (passwords may hold @ or /)
_USERINFO: Final = re.compile(r"^([^:/?#]*://[^:]*):.*@(?=[^@]*$)")
_SCHEMELESS: Final = re.compile(r"^([^:@/]*):.*@(?=[^@]*$)")


def split_transport_url(url: str, *, hostless: bool) -> list[str]:
    """Every broker URL in *url*: ``;``-separated pieces, oslo's comma list of hosts expanded.

    *hostless* keeps a URL without a host (kombu's ``memory://``); AMQP 1.0 brokers
    always need one, so the qpid strategy drops such pieces.
    """
    urls: list[str] = []
    for piece in (p.strip() for p in url.split(";")):
        if not piece:
            continue
        scheme, sep, rest = piece.partition("://")
        netloc, slash, path = rest.partition("/")
        hosts = netloc.split(",")
        urls += [f"{scheme}{sep}{host}{slash}{path}" for host in hosts if host or hostless]
    return urls


def check_url(
    option: str, url: str, *, host_needed: bool = True, whole: str | None = None
) -> SplitResult:
    """*url* split, after checking scheme, host, port (1-65535) and IPv6 brackets.

    A ConfigError names *option* and shows, masked, *whole*: the option's whole value,
    of which *url* is one piece. A piece alone may hold part of a password that held a
    ``;`` or ``,`` (which split the value), with no ``@`` left to mask it by.
    """

    def bad(accepted: str) -> ConfigError:
        return ConfigError(option, mask_url(whole or url), accepted)

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # "[::1", port "abc" or 999999; its text may quote a password
        raise bad("a URL with a port from 1 to 65535, IPv6 hosts in [brackets]") from None
    if not parts.scheme or "://" not in url:
        raise bad("a URL of the form scheme://[user:password@]host[:port][/path]")
    if host_needed and not parts.hostname:
        raise bad("a URL with a host name or address")
    if port == 0:
        raise bad("a URL with a port from 1 to 65535")
    return parts


def bracketed(host: str) -> str:
    """*host* as it goes into a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def mask_url(url: str) -> str:
    """*url* with its password (if any) replaced by ``****``.

    It errs on the side of hiding: everything from the first ``:`` after ``://`` to the
    URL's last ``@`` goes. A password cannot start before that ``:`` (a user name has
    none) nor end after that ``@``, whatever it holds (``/``, ``?``, ``#``, ``@``, which
    end a URL parser's netloc early) and however many hosts follow (oslo's
    ``user:pw@h1,user:pw@h2``). A URL with an ``@`` in its path loses more than its
    password; no URL keeps one.
    """
    if "://" not in url:  # without a scheme "user:pw@h" would read as scheme "user"
        return _SCHEMELESS.sub(rf"\1:{MASK}@", url)
    return _USERINFO.sub(rf"\1:{MASK}@", url)


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


def check_files(config: Mapping[str, Any], options: Iterable[str]) -> None:
    """Each of *options* that is set names a readable file, or a ConfigError names it
    (a TLS file that is missing would otherwise fail every connection, forever)."""
    for option in options:
        path = config[option]
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise ConfigError(option, path, "a readable file")
