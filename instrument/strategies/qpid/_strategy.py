"""The ``qpid`` strategy: Glance's qpid notifications over AMQP 1.0 (python-qpid-proton).

Glance's qpid strategy spoke AMQP 0-10 through ``qpid-python``, which is Python 2
only. Apache Qpid's maintained client is ``python-qpid-proton`` (AMQP 1.0), which
reaches Qpid Broker-J, Qpid Dispatch Router, ActiveMQ Artemis and RabbitMQ (plugin
``rabbitmq_amqp1_0``). Glance's ``qpid_*`` option names and defaults are kept.

Wire format: the JSON envelope (bytes in a Data section, content type
``application/json``, durable, message id = ``message_id``) goes to the exchange
``qpid_notification_exchange`` (``glance``) with the routing key
``<qpid_notification_topic>.<priority lowercased>`` (``notifications.info``) as the
subject. The target address comes from ``qpid_address`` or the ``qpid_broker`` preset
(see :mod:`._config`); by default (``auto``) RabbitMQ gets
``/exchange/glance`` and other brokers ``glance``.

Who makes the exchange exist: on RabbitMQ (whose AMQP 1.0 plugin cannot declare
exchanges) the strategy declares the topic exchange and Glance's queues
``notifications.info|warn|error`` over an AMQP 0-9-1 side connection with kombu when
kombu is installed (``qpid_declare``, see :mod:`._declare`): what exists is used as
it is (one warning per name when it differs), only what is missing is created
(``qpid_durable_queues``, ``qpid_quorum_*``), so a kombu or
oslo.messaging consumer bound to ``glance``/``notifications.info`` gets every
notification, also those sent before it started. Without kombu, or with
``qpid_declare = false``, the exchange must exist; when it does not the broker's
``amqp:not-found`` is reported as such and retried. Falling back to ``amq.topic``
was rejected: Glance consumers bind to ``glance``.

Decisions shared with the rabbit strategy: :meth:`emit` only enqueues into
:class:`~instrument.delivery.Delivery` (retries, outbox, fork safety); proton is
imported lazily, :meth:`from_settings` names the extra to install without it;
:meth:`check` connects, declares and attaches with a fresh connection and raises
:class:`~instrument.exceptions.StrategyError` saying why, per broker; no password
reaches ``repr``, logs or errors.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from ...delivery import DELIVERY_OPTIONS, Publisher
from ...options import Option, boolean, choice, integer, number, string
from .._broker import option_maker, run_once, timeout_options
from .._broker_strategy import BrokerStrategy, Client
from .._topology import quorum_options
from ._config import BROKERS, QpidTarget, check_template, qpid_target, retry_schedule

__all__ = ["QPID_OPTIONS", "QpidStrategy"]

log = logging.getLogger("instrument.strategies.qpid")

_opt = option_maker("qpid")


def _template(name: str, value: Any) -> str:
    return check_template(string(name, value))


_SECONDS = number(0)

QPID_OPTIONS: Final = (
    _opt("qpid_hostname", "localhost", "the AMQP 1.0 broker host."),
    _opt("qpid_port", 5672, "the broker port.", integer(1, 65535)),
    _opt("qpid_username", "", "SASL user name (empty: SASL ANONYMOUS)."),
    _opt("qpid_password", "", "SASL password.", secret=True),
    _opt(
        "qpid_sasl_mechanisms",
        "",
        "space-separated SASL mechanisms allowed, e.g. PLAIN (empty: proton's choice).",
    ),
    _opt("qpid_protocol", "tcp", "tcp, or ssl (TLS, certificate verified).", choice("tcp", "ssl")),
    _opt("qpid_ssl_ca_file", None, "CA file the broker certificate must chain to."),
    _opt("qpid_ssl_cert_file", None, "client certificate file (mutual TLS)."),
    _opt("qpid_ssl_key_file", None, "client private key file (mutual TLS)."),
    _opt(
        "qpid_ssl_server_name",
        None,
        "host name the broker certificate is checked against and sent as SNI "
        "(default: the host connected to).",
    ),
    _opt("qpid_heartbeat", 5.0, "AMQP idle timeout (heartbeat) in seconds; 0 disables.", _SECONDS),
    _opt("qpid_reconnect_timeout", 0.0, "seconds to keep retrying a batch (0: forever).", _SECONDS),
    _opt(
        "qpid_reconnect_limit",
        0,
        "attempts per batch before it is dropped (0: forever).",
        integer(0),
    ),
    _opt("qpid_reconnect_interval_min", 0.0, "first wait between attempts (0: 1 s).", _SECONDS),
    _opt("qpid_reconnect_interval_max", 0.0, "longest wait between attempts (0: 30 s).", _SECONDS),
    _opt("qpid_reconnect_interval", 0.0, "fixed wait between attempts (0: doubling).", _SECONDS),
    _opt("qpid_notification_exchange", "glance", "the exchange notifications go to."),
    _opt("qpid_notification_topic", "notifications", "routing key prefix (subject)."),
    _opt(
        "qpid_broker",
        "auto",
        "address preset: rabbitmq (/exchange/{exchange}), qpid ({exchange}) or auto "
        "(from the broker's product property).",
        choice(*BROKERS),
    ),
    _opt(
        "qpid_address",
        "",
        "target address template with {exchange}, {topic}, {routing_key}, e.g. "
        "/exchange/{exchange}/{routing_key} (empty: the qpid_broker preset).",
        _template,
    ),
    _opt(
        "qpid_declare",
        True,
        "on RabbitMQ, declare the topic exchange and <topic>.info|warn|error queues "
        "over AMQP 0-9-1 (needs kombu).",
        boolean,
    ),
    _opt(
        "qpid_durable_queues",
        False,
        "create them durable when missing (what exists is used as it is).",
        boolean,
    ),
    *quorum_options(_opt, "qpid"),
    *timeout_options(_opt, "qpid", "settle", "settlement"),
    _opt(
        "qpid_transport_url",
        None,
        "broker URL(s) instead of qpid_hostname & co: amqp://u:p@h1:5672;amqps://h2:5671 "
        "(failover) or amqp://u:p@h1,u:p@h2/; a path names the virtual host (RabbitMQ's "
        "vhost:<name>, a Qpid broker's own name with qpid_broker = qpid).",
        aliases=("transport_url",),
        secret=True,
    ),
)

_OPTIONS: Final = (*QPID_OPTIONS, *DELIVERY_OPTIONS)


class QpidStrategy(BrokerStrategy):
    """Publish notifications to an AMQP 1.0 broker in the background.

    Keyword arguments are the option names, e.g.
    ``QpidStrategy(qpid_transport_url="amqps://u:p@broker:5671", qpid_ssl_ca_file=...)``.
    """

    name: ClassVar[str] = "qpid"
    options: ClassVar[tuple[Option, ...]] = _OPTIONS

    client = Client("proton", "python-qpid-proton", "qpid")

    def _start(self, config: dict[str, Any]) -> None:
        super()._start(config)
        _strategies.add(self)

    def make_target(self, config: Mapping[str, Any]) -> QpidTarget:
        return qpid_target(config)

    def retry_settings(self) -> dict[str, Any]:
        return retry_schedule(self.config)

    def publisher(self, target: QpidTarget) -> Publisher:
        from ._publisher import QpidPublisher

        _register_exit_hook()
        return QpidPublisher(target)

    def close(self) -> None:
        _strategies.discard(self)
        super().close()

    def __repr__(self) -> str:
        return f"<QpidStrategy {self.target.masked_urls} exchange={self.target.exchange!r}>"


# Held strongly until closed, as the engines are: one dropped without close() must still
# be closed by _close_all_at_exit, before proton's own exit hook.
_strategies: set[QpidStrategy] = set()


@run_once
def _register_exit_hook() -> None:
    """Close our strategies at exit *before* proton's bindings drop their handles.

    cproton registers an atexit hook (when proton is first imported) that clears the
    handles proton's C objects refer to; touching a connection afterwards aborts the
    interpreter. atexit runs hooks in reverse order, so one registered after proton's
    import runs first. (The engine's own exit hook was registered earlier, so it runs
    too late for proton.)
    """
    atexit.register(_close_all_at_exit)


def _close_all_at_exit() -> None:
    for strategy in list(_strategies):
        try:
            strategy.close()
        except Exception:  # interpreter exit: report, never raise
            log.exception("qpid: close at exit failed")
