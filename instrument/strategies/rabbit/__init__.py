"""The ``rabbit`` strategy: Glance's RabbitMQ notifications through kombu (AMQP 0-9-1).

Importing this package needs no kombu: the client is imported by the publisher, which
the strategy loads only when its delivery worker or :meth:`check` needs one.
"""

from __future__ import annotations

from ._strategy import RABBIT_OPTIONS, RabbitStrategy

__all__ = ["RABBIT_OPTIONS", "RabbitStrategy"]
