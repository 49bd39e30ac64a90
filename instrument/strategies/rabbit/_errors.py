"""Why a connection to RabbitMQ or a publish failed, said for an operator (no password).

Refused, timeout, authentication, unknown vhost, TLS, a broker that stopped reading.
A PRECONDITION_FAILED is passed on as the broker said it, with no advice: declarations
adopt what exists (:mod:`.._topology`), so it is never a durability mismatch to fix
by an option. Every message is scrubbed of passwords.
"""

from __future__ import annotations

import importlib
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

from ._config import RabbitTarget

__all__ = ["explain"]

# py-amqp's annotations are partial; we use it as an untyped library.
amqp_errors: Any = importlib.import_module("amqp.exceptions")


def explain(exc: BaseException, target: RabbitTarget, url: str) -> str:
    """Say what is wrong, for an operator, with no password in it."""
    return target.scrub(_explain(exc, target, url))


def _explain(exc: BaseException, target: RabbitTarget, url: str) -> str:
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or ''}".rstrip(":")
    if isinstance(exc, amqp_errors.PreconditionFailed):
        return f"PRECONDITION_FAILED: {getattr(exc, 'reply_text', exc)}"
    if isinstance(exc, amqp_errors.AccessRefused):
        if getattr(exc, "method_sig", None) == (0, 0) or "Login was refused" in str(exc):
            user = parts.username or target.userid
            return f"authentication failed for user {user!r} (check the user id and password)"
        return f"access refused: {getattr(exc, 'reply_text', exc)}"
    if isinstance(exc, amqp_errors.NotAllowed):
        vhost = target.vhost_of(url)
        return (
            f"virtual host {vhost!r} does not exist or the user may not use it "
            f"({getattr(exc, 'reply_text', exc)})"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where} (is RabbitMQ running and listening there?)"
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake with {where} failed: {exc.reason or exc} (check the CA/cert/key files)"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {parts.hostname!r}: {exc.strerror}"
    if isinstance(exc, BlockingIOError):  # SO_SNDTIMEO/SO_RCVTIMEO of a blocking socket
        return (
            f"{where} stopped reading or answering (socket timeout; a memory or disk alarm "
            f"blocks publishers, or the connection is half-open): {exc}"
        )
    if isinstance(exc, TimeoutError):
        return f"timed out after {target.connect_timeout:g} s talking to {where}"
    if isinstance(exc, OSError) and "unexpectedly closed" in str(exc) and parts.port:
        return f"{where} closed the connection during the handshake ({exc}); TLS port without TLS?"
    if isinstance(exc, amqp_errors.AMQPError):
        return f"broker error {getattr(exc, 'reply_code', '')}: {getattr(exc, 'reply_text', exc)}"
    return f"{type(exc).__name__}: {exc}"
