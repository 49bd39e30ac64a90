"""The delivery engine shared by the broker strategies: emit enqueues, a worker publishes.

Each module holds the decisions that concern it (see their docstrings); imports run
downwards only, top to bottom:

* :mod:`._engine`: :class:`Delivery`, the bounded queue in front of one worker: submit,
  overflow, lazy start, flush, close, stats.
* :mod:`._process`: the at-fork pause and resume of every engine, and close at exit.
* :mod:`._worker`: the thread and its loop; pausable between two steps for a fork.
* :mod:`._sender`: one :class:`Publisher`, its connection and the retry schedule.
* :mod:`._spool`: where batches come from: the memory intake, or the outbox it fills.
* :mod:`._intake`: the memory queue, owned by one object, shared by engine and worker.
* :mod:`._outbox`: the SQLite outbox and the process's fork lock around SQLite calls.
* :mod:`._owner`: who owns an outbox row, and whether that owner is still alive.
* :mod:`._publisher` and :mod:`._options`: leaves, the broker-side protocol and the
  strategy options.
"""

from __future__ import annotations

from ._engine import Delivery
from ._options import DELIVERY_OPTIONS, retry_options
from ._publisher import Publisher

__all__ = ["DELIVERY_OPTIONS", "Delivery", "Publisher", "retry_options"]
