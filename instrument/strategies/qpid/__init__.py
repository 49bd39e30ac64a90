"""The ``qpid`` strategy: Glance's qpid notifications over AMQP 1.0 (python-qpid-proton).

Importing this package needs no proton: the client is imported by the publisher, which
the strategy loads only when its delivery worker or :meth:`check` needs one.
"""

from __future__ import annotations

from ._strategy import QPID_OPTIONS, QpidStrategy

__all__ = ["QPID_OPTIONS", "QpidStrategy"]
