"""Glance's exchange and queues on RabbitMQ: adopt what exists, create only what is missing.

Shared by the rabbit strategy and the qpid strategy's AMQP 0-9-1 side connection
(:mod:`.qpid._declare`). No broker client is imported: the caller hands in an open
kombu ``Connection`` and its channels are used as they are (py-amqp's, or a kombu
virtual transport's).

Decisions:

* **Look before declaring.** Each name is first declared *passively*, which only asks
  whether it exists. What does not exist is created as configured (a topic exchange,
  queues ``<topic>.info|warn|error``, durability and quorum arguments from the
  options). What exists is **used as it is**, whatever its durability, type (classic,
  quorum, stream) or arguments: a consumer (Ceilometer, an oslo.messaging service,
  kolla-ansible's quorum queues) declared it first, and fighting it with
  PRECONDITION_FAILED lost every notification.
* **How it differs is asked of the broker itself.** A passive declare says nothing about
  properties, so an existing name is declared again as configured: if it is
  equivalent, that is a no-op; if not, RabbitMQ names the *first* inequivalent field
  (``inequivalent arg 'x-queue-type' … received none but current is the value
  'quorum' of type 'longstr'``). The probe takes the current value and asks again,
  until the broker agrees (at most :data:`_MAX_PROBES` times); each refusal closes the
  channel, so a new one is opened. The differences are warned about **once per name**
  (per process), naming what was found and what is configured. The management API
  was rejected: it is a plugin, on another port, with other credentials.
* A user that may publish but not configure (ACCESS_REFUSED on the probe) cannot learn
  the differences: the name is used as it is and that is logged at INFO.
* Bindings are always (re)made, ``<topic>.<key>`` to the exchange with its own name:
  binding is idempotent, and a queue someone else declared receives the notifications.
* Any other failure (no permission, exclusive queue of another connection, …) is raised
  as before: the engine keeps the notifications and the strategy explains the error.
* **Quorum queues when asked** (:func:`quorum_options`, oslo.messaging's names):
  ``<prefix>_quorum_queue`` declares the queues it creates with ``x-queue-type:
  quorum`` (always durable) and the optional ``x-delivery-limit``,
  ``x-max-in-memory-length`` and ``x-max-in-memory-bytes`` (0: not set, as in oslo).
  A limit given without ``<prefix>_quorum_queue`` is a ConfigError, not ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..exceptions import ConfigError
from ..options import Option, boolean, integer
from ._broker import PRIORITY_KEYS
from ._differences import Difference, note_not_compared, parse_inequivalence, warn_differences

__all__ = ["Topology", "check_names", "declare_glance", "quorum_arguments", "quorum_options"]

_MAX_PROBES: Final = 16
_NOT_FOUND, _ACCESS_REFUSED, _PRECONDITION_FAILED = 404, 403, 406

# option suffix -> queue argument (oslo.messaging's mapping)
_QUORUM_LIMITS: Final = {
    "quorum_delivery_limit": "x-delivery-limit",
    "quorum_max_memory_length": "x-max-in-memory-length",
    "quorum_max_memory_bytes": "x-max-in-memory-bytes",
}
_QUORUM_HELP: Final = {
    "quorum_delivery_limit": "redeliveries before a message is dropped or dead-lettered",
    "quorum_max_memory_length": "messages a quorum queue keeps in memory",
    "quorum_max_memory_bytes": "bytes of messages a quorum queue keeps in memory",
}


# --------------------------------------------------------------------------- options


def quorum_options(make: Callable[..., Option], prefix: str) -> tuple[Option, ...]:
    """``<prefix>_quorum_queue`` and its three limits (oslo.messaging's option names)."""
    return (
        make(
            f"{prefix}_quorum_queue",
            False,
            "create missing queues as quorum queues (x-queue-type: quorum, always durable; "
            "a missing exchange durable too).",
            boolean,
        ),
        *(
            make(f"{prefix}_{suffix}", 0, f"{_QUORUM_HELP[suffix]} (0: no limit).", integer(0))
            for suffix in _QUORUM_LIMITS
        ),
    )


#: AMQP 0-9-1's short strings (exchange names, routing keys) hold at most 255 bytes.
_SHORT_STRING: Final = 255


def check_names(config: Mapping[str, Any], prefix: str) -> tuple[str, str]:
    """``<prefix>_notification_exchange`` and ``_topic``, or a ConfigError naming the one
    that is empty or too long for AMQP (the topic with ``.error`` after it)."""
    exchange_option = f"{prefix}_notification_exchange"
    topic_option = f"{prefix}_notification_topic"
    longest_key = max(len(f".{key}") for key in PRIORITY_KEYS)
    for option, room in (
        (exchange_option, _SHORT_STRING),
        (topic_option, _SHORT_STRING - longest_key),
    ):
        name = config[option]
        if not name:
            raise ConfigError(option, name, "a name that is not empty")
        if len(name.encode()) > room:
            raise ConfigError(option, name, f"a name of at most {room} bytes in UTF-8")
    return config[exchange_option], config[topic_option]


def quorum_arguments(config: Mapping[str, Any], prefix: str) -> tuple[tuple[str, Any], ...]:
    """The queue arguments the quorum options ask for; ConfigError for a stray limit."""
    enabled = config[f"{prefix}_quorum_queue"]
    limits = {
        argument: config[f"{prefix}_{suffix}"]
        for suffix, argument in _QUORUM_LIMITS.items()
        if config[f"{prefix}_{suffix}"]
    }
    if not enabled:
        if limits:
            stray = next(s for s, a in _QUORUM_LIMITS.items() if a in limits)
            raise ConfigError(
                f"{prefix}_quorum_queue",
                enabled,
                f"true ({prefix}_{stray} is set, and applies to quorum queues only)",
            )
        return ()
    return (("x-queue-type", "quorum"), *limits.items())


# --------------------------------------------------------------------------- topology


@dataclasses.dataclass(frozen=True)
class Topology:
    """What Glance's wire contract needs on the broker, as configured.

    *prefix* (``rabbit``, ``qpid``) names the logger and the options in warnings.
    """

    prefix: str
    exchange: str
    topic: str
    durable: bool
    queue_arguments: tuple[tuple[str, Any], ...] = ()

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(f"{self.topic}.{key}" for key in PRIORITY_KEYS)

    @property
    def lasting(self) -> bool:
        """Whether what is created is durable: asked for, or implied by quorum queues
        (always durable; oslo.messaging then declares the exchange durable too, and its
        consumers refuse a transient one)."""
        return self.durable or bool(self.queue_arguments)

    def exchange_spec(self) -> dict[str, Any]:
        return {"type": "topic", "durable": self.lasting, "auto_delete": False}

    def entities(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(kind, name, spec)`` in declaration order: the exchange, then the queues."""
        queues = [("queue", name, self.queue_spec()) for name in self.queues]
        return [("exchange", self.exchange, self.exchange_spec()), *queues]

    def queue_spec(self) -> dict[str, Any]:
        """Quorum queues are always durable; ``x-`` keys are the queue's arguments."""
        return {
            "durable": self.lasting,
            "auto_delete": False,
            "exclusive": False,
            **dict(self.queue_arguments),
        }


def declare_glance(conn: Any, topology: Topology) -> None:
    """Adopt or create the exchange and the queues, and bind them, on channels of *conn*.

    Names that differ in the same way are named in one warning (the three queues
    pre-declared as quorum queues give one line, not three).
    """
    declarer = _Declarer(conn)
    found: dict[tuple[str, tuple[Difference, ...]], list[str]] = {}
    try:
        for kind, name, spec in topology.entities():
            differences = declarer.ensure(kind, name, spec, topology.prefix)
            if differences:
                found.setdefault((kind, tuple(differences)), []).append(name)
            if kind == "queue":
                declarer.channel.queue_bind(
                    queue=name, exchange=topology.exchange, routing_key=name
                )
    finally:
        declarer.close()
        for (kind, alike), names in found.items():
            warn_differences(topology.prefix, kind, names, alike)


class _Declarer:
    """Declarations on a channel that is reopened whenever the broker closes it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.channel: Any = conn.channel()

    def ensure(self, kind: str, name: str, wanted: dict[str, Any], prefix: str) -> list[Difference]:
        """Create *name* if missing (no differences), else adopt it: how it differs."""
        if not self._exists(kind, name):
            try:
                self._declare(kind, name, wanted)
                return []
            except Exception as exc:  # created by someone else in between: adopt it
                self._reopen_unless(exc, _PRECONDITION_FAILED)
        return self._compare(kind, name, wanted, prefix)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.close()

    def _exists(self, kind: str, name: str) -> bool:
        try:
            self._declare(kind, name, {}, passive=True)
        except Exception as exc:
            self._reopen_unless(exc, _NOT_FOUND)
            return False
        return True

    def _compare(
        self, kind: str, name: str, wanted: dict[str, Any], prefix: str
    ) -> list[Difference]:
        """Probe until the broker accepts; what had to change is what differs."""
        probe, differences = dict(wanted), list[Difference]()
        for _ in range(_MAX_PROBES):
            try:
                self._declare(kind, name, probe)
                return differences
            except Exception as exc:
                code = _code(exc)
                if code == _ACCESS_REFUSED:
                    self._reopen_unless(exc, code)
                    note_not_compared(prefix, kind, name, _text(exc))
                    return differences
                self._reopen_unless(exc, _PRECONDITION_FAILED)
                difference = parse_inequivalence(_text(exc))
                if difference is None or difference.field in {d.field for d in differences}:
                    return [*differences, Difference("?", None, _text(exc))]
                differences.append(difference)
                probe = difference.apply(probe)
        return differences

    def _declare(self, kind: str, name: str, spec: dict[str, Any], passive: bool = False) -> None:
        arguments = {k: v for k, v in spec.items() if k.startswith("x-")}
        flags = {k: v for k, v in spec.items() if not k.startswith("x-")}
        if kind == "exchange":
            flags.setdefault("type", "topic")
            self.channel.exchange_declare(
                exchange=name, passive=passive, arguments=arguments, **flags
            )
        else:
            self.channel.queue_declare(queue=name, passive=passive, arguments=arguments, **flags)

    def _reopen_unless(self, exc: Exception, expected: int) -> None:
        """Re-raise *exc* unless its reply code is *expected*; then open a new channel."""
        if _code(exc) != expected:
            raise exc
        self.close()
        self.channel = self.conn.channel()


def _code(exc: BaseException) -> int | None:
    try:
        return int(getattr(exc, "reply_code", None) or 0) or None
    except (TypeError, ValueError):
        return None


def _text(exc: BaseException) -> str:
    return str(getattr(exc, "reply_text", "") or exc)
