"""The proton connection of the qpid publisher: opened with our TLS/SASL, closed bounded.

proton's ``BlockingConnection.close()`` runs the event loop until the socket is gone,
which never happens when the close handshake timed out against a broker that accepts
and never answers (no heartbeat ends it: ``check()`` uses none). :class:`Connection`
closes the transport itself after a bounded wait for the broker's close, also when
the constructor gives up. The broker certificate is always verified, host name
included (``qpid_ssl_server_name`` overrides the name checked and sent as SNI).
"""

from __future__ import annotations

import contextlib
import importlib
import time
from typing import Any, Final

from ._config import Broker, QpidTarget

__all__ = ["Connection"]

# proton's annotations are partial; we use it as an untyped library.
proton: Any = importlib.import_module("proton")
proton_utils: Any = importlib.import_module("proton.utils")

_CLOSE_TIMEOUT: Final = 1.0  # never wait longer for a broker to answer our close


class Connection(proton_utils.BlockingConnection):  # type: ignore[misc]
    """A BlockingConnection whose ``close()`` is bounded (see the module docstring)."""

    @classmethod
    def open(cls, target: QpidTarget, broker: Broker) -> Connection:
        """Connect to *broker* (proton's reconnect off), TLS and SASL as *target* says."""
        return cls(broker.url, timeout=target.connect_timeout, **_connect_kwargs(target, broker))

    closing: bool
    container: Any
    conn: Any

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        container, conn = self.container, self.conn
        container.errors = []
        try:
            if conn is not None:
                conn.close()
                with contextlib.suppress(Exception):  # proton.Timeout: a silent broker
                    self.wait(
                        lambda: not conn.state & proton.Endpoint.REMOTE_ACTIVE,
                        timeout=_CLOSE_TIMEOUT,
                        msg="Closing connection",
                    )
                transport = conn.transport
                if transport is not None:  # drop the socket, answered or not
                    transport.close_tail()
                    transport.close_head()
        finally:
            _shut_down(container, conn)
            self.conn = None
            self.container = None


def _shut_down(container: Any, conn: Any) -> None:
    """Let the reactor release the socket, for at most ``_CLOSE_TIMEOUT``, then stop it."""
    if conn is not None:
        conn.free()
    container.timeout = 0.05
    deadline = time.monotonic() + _CLOSE_TIMEOUT
    with contextlib.suppress(Exception):
        while time.monotonic() < deadline and container.process():
            pass
    with contextlib.suppress(Exception):
        container.stop()
        container.process()
    if conn is not None:
        conn.handler = None  # break the cycle, as proton does
    container.stop_events()


def _connect_kwargs(target: QpidTarget, broker: Broker) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"reconnect": False, "heartbeat": target.heartbeat or None}
    if broker.vhost:
        # The open frame's hostname: RabbitMQ's AMQP 1.0 plugin reads "vhost:<name>"; a
        # Qpid broker takes the name itself.
        qpid = target.broker_kind == "qpid"
        kwargs["virtual_host"] = broker.vhost if qpid else f"vhost:{broker.vhost}"
    if broker.user:
        kwargs.update(user=broker.user, password=broker.password)
    if target.sasl_mechanisms:
        kwargs["allowed_mechs"] = target.sasl_mechanisms
    if broker.tls:
        kwargs["ssl_domain"] = _ssl_domain(target)
        kwargs["sni"] = target.ssl_server_name or broker.host
    return kwargs


def _ssl_domain(target: QpidTarget) -> Any:
    domain = proton.SSLDomain(proton.SSLDomain.MODE_CLIENT)
    if target.ssl_ca_file:
        domain.set_trusted_ca_db(target.ssl_ca_file)
    domain.set_peer_authentication(proton.SSLDomain.VERIFY_PEER_NAME, target.ssl_ca_file)
    if target.ssl_cert_file:
        domain.set_credentials(target.ssl_cert_file, target.ssl_key_file, None)
    return domain
