"""What the rabbit and qpid strategies share, each in one place.

Options, transport URLs, failover, the check's per-host timeout, masking, TLS and the
run-once helper. Glance's declarations
(adopt what exists, create what is missing) are in :mod:`._topology`.
No broker client is imported here: kombu is handed in by the caller, so this module
imports without any optional dependency.

Decisions:

* **Failover by hand** (:func:`failover`): every host once, starting with the one that
  worked last, each failure said per host. Clients' own alternates retry with their own
  sleeps (kombu sleeps 2 s after a refused connection); the delivery engine owns retry.
* **URLs** (splitting, validating, masking, scrubbing) live in :mod:`._urls` and are
  re-exported here.
* **The check's timeout is split over the hosts** (:func:`check_target`): each gets
  ``timeout / hosts`` (at most its ``connect_timeout``, at least 0.1 s), no heartbeat.

* **No durability advice.** Existing exchanges and queues are adopted as they are
  (:mod:`._topology`, a name created between the look and the declaration included),
  so a declaration never fails over durability any more, and no option has to be set
  "to match" what exists; the explanation that said so is gone.
* **Run once** (:class:`run_once`): a warning or an exit hook that must happen once per
  process is a function wrapped in :class:`run_once`, not a module-level list used as
  a flag.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, ParamSpec, Protocol, TypeVar

from .._once import run_once
from ..exceptions import StrategyError
from ..options import MASK, Option, number, string
from ._urls import (
    bracketed,
    check_files,
    check_url,
    mask_url,
    scrub,
    secret_forms,
    split_transport_url,
)

__all__ = [
    "MASK",
    "PRIORITY_KEYS",
    "bracketed",
    "check_files",
    "check_target",
    "check_url",
    "failover",
    "kombu_ssl_options",
    "mask_url",
    "option_maker",
    "parse_options",
    "run_once",
    "scrub",
    "secret_forms",
    "split_transport_url",
    "timeout_options",
]

PRIORITY_KEYS: Final = ("info", "warn", "error")

P = ParamSpec("P")
T = TypeVar("T")


# --------------------------------------------------------------------------- once


# --------------------------------------------------------------------------- options


def option_maker(strategy: str) -> Callable[..., Option]:
    """An ``Option`` factory whose help texts start with ``<strategy> strategy: ``."""

    def make(name: str, default: Any, help: str, parse: Any = string, **kw: Any) -> Option:
        return Option(name, default, f"{strategy} strategy: {help}", parse, **kw)

    return make


def timeout_options(
    make: Callable[..., Option], prefix: str, confirm: str, what: str
) -> tuple[Option, Option]:
    """``<prefix>_connect_timeout`` and ``<prefix>_<confirm>_timeout``, the wait for *what*."""
    return (
        make(
            f"{prefix}_connect_timeout",
            5.0,
            "seconds one connection attempt to one host may take, all of it "
            "(TCP, TLS, AMQP handshake).",
            number(0.1),
        ),
        make(
            f"{prefix}_{confirm}_timeout",
            15.0,
            f"seconds to wait for a batch's {what}.",
            number(0.1),
        ),
    )


def parse_options(
    options: Iterable[Option], values: Mapping[str, Any], owner: str
) -> dict[str, Any]:
    """Keyword arguments as typed values: given ones parsed (validated), the others defaults.

    Only for a strategy built from keyword arguments; ``from_settings`` hands over what
    ``Settings.get`` parsed, which is not parsed again.
    """
    known = {option.name: option for option in options}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TypeError(f"{owner}() got unknown options: {', '.join(unknown)}")
    parsed = {}
    for name, option in known.items():
        value = values.get(name)
        parsed[name] = option.default if value is None else option.parse(name, value)
    return parsed


# --------------------------------------------------------------------------- connecting


def failover(
    hosts: Sequence[T],
    first: int,
    open: Callable[[T], None],
    reason: Callable[[T, Exception], str],
    close: Callable[[], None],
) -> int:
    """Open the first host that works, trying each once from index *first*; its index.

    After a failure *close* runs before the next host is tried. When none works the
    StrategyError lists ``reason(host, exc)`` for every host, in the order tried.
    """
    reasons = []
    for step in range(len(hosts)):
        index = (first + step) % len(hosts)
        try:
            open(hosts[index])
        except Exception as exc:
            close()
            reasons.append(reason(hosts[index], exc))
            continue
        return index
    raise StrategyError("; ".join(reasons))


class _Target(Protocol):
    """What :func:`check_target` needs of a strategy's frozen target dataclass."""

    __dataclass_fields__: dict[str, Any]

    @property
    def connect_timeout(self) -> float: ...

    @property
    def hosts(self) -> int: ...


TargetT = TypeVar("TargetT", bound=_Target)


def check_target(target: TargetT, timeout: float) -> TargetT:
    """*target* for ``check(timeout)``: the timeout shared by its hosts, no heartbeat."""
    per_host = max(0.1, min(target.connect_timeout, timeout / target.hosts))
    return dataclasses.replace(target, connect_timeout=per_host, heartbeat=0.0)  # type: ignore[type-var]


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


# --------------------------------------------------------------------------- explaining
