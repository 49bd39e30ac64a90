"""Declaring Glance's exchange and queues on RabbitMQ for the qpid strategy (via kombu).

RabbitMQ's AMQP 1.0 plugin (3.x) routes ``/exchange/<name>`` targets but cannot create
exchanges, queues or bindings: a missing exchange ends the session with
``amqp:not-found``, and a message to an exchange with no bound queue is *accepted and
dropped*. Glance's qpid strategy had its broker create the exchange (``create:
always``) and Glance's wire contract has the queues ``<topic>.info|warn|error``
exist so nothing is lost before a consumer starts. So, on every new connection to a
RabbitMQ broker (``qpid_declare``, on by default), the topic exchange and those queues
are declared over AMQP 0-9-1 on the same host and port (the plugin shares it), with
the same credentials and TLS settings (without ``qpid_username``, RabbitMQ's AMQP 1.0
default user ``guest`` is assumed). What exists is used as it is, whatever its
durability, type or arguments (:mod:`.._topology`: passive declare first, one warning
per name naming the difference); what is missing is created with
``qpid_durable_queues`` and ``qpid_quorum_*``.

kombu is optional here: without it the declaration is skipped with one warning, and
the exchange (and queues) must exist; a missing exchange is then reported precisely.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Any, Final
from urllib.parse import quote

from ...exceptions import StrategyError
from .._broker import bracketed, kombu_ssl_options, run_once
from .._topology import declare_glance
from ._config import Broker, QpidTarget

__all__ = ["declare_on_rabbitmq"]

log = logging.getLogger("instrument.strategies.qpid")
_DEFAULT_USER: Final = "guest"


@run_once
def _warn_no_kombu(exchange: str) -> None:
    log.warning(
        "qpid: kombu is not installed, so exchange %r is not declared on RabbitMQ; "
        "it (and queues bound to it) must exist (pip install 'instrument[rabbit]')",
        exchange,
    )


def declare_on_rabbitmq(target: QpidTarget, broker: Broker) -> None:
    """Declare the exchange and queues; StrategyError saying what failed."""
    try:
        kombu: Any = importlib.import_module("kombu")
    except ImportError:
        _warn_no_kombu(target.exchange)
        return
    conn: Any = None
    try:
        # Socket timeouts, and no close handshake: a silent broker must not hold the worker.
        conn = kombu.Connection(
            _url(broker),
            ssl=_ssl_options(target, broker),
            connect_timeout=target.connect_timeout,
            transport_options={
                "read_timeout": target.connect_timeout,
                "write_timeout": target.connect_timeout,
            },
        )
        conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        declare_glance(conn, target.topology)
    except Exception as exc:
        raise StrategyError(target.scrub(_explain(exc, target))) from None
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.collect()


def _url(broker: Broker) -> str:
    """The AMQP 0-9-1 URL of *broker*: same host, port, credentials and virtual host."""
    user = quote(broker.user or _DEFAULT_USER, safe="")
    password = quote(broker.password or (_DEFAULT_USER if not broker.user else ""), safe="")
    scheme = "amqps" if broker.tls else "amqp"
    vhost = quote(broker.vhost, safe="") if broker.vhost else "/"  # "//": the default "/"
    return f"{scheme}://{user}:{password}@{bracketed(broker.host)}:{broker.port}/{vhost}"


def _ssl_options(target: QpidTarget, broker: Broker) -> dict[str, object] | bool:
    if not broker.tls:
        return False
    return kombu_ssl_options(
        target.ssl_server_name or broker.host,
        target.ssl_ca_file,
        target.ssl_cert_file,
        target.ssl_key_file,
    )


def _explain(exc: BaseException, target: QpidTarget) -> str:
    text = str(getattr(exc, "reply_text", "") or exc)
    where = f"declaring exchange {target.exchange!r} and its queues over AMQP 0-9-1 failed"
    return f"{where}: {type(exc).__name__}: {text} (or set qpid_declare = false)"
