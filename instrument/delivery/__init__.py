"""The delivery engine shared by the broker strategies: emit enqueues, a worker publishes.

Each module holds the decisions that concern it (see their docstrings); imports run
downwards only, top to bottom:

* :mod:`._engine`: :class:`Delivery`, the bounded queue in front of one worker: submit,
  overflow, lazy start, flush, close, stats.
* :mod:`._process`: the at-fork pause and resume of every engine, and close at exit.
* :mod:`._worker`: the thread and its loop; pausable between two steps for a fork.
* :mod:`._sender`: one :class:`Publisher`, its connection and the retry schedule.
* :mod:`._spool`: where batches come from: own journal, adopted journals, memory.
* :mod:`._intake`: the memory queue, owned by one object, shared by engine and worker.
* :mod:`._legacy`: the import of an earlier version's SQLite outbox (upgrade path).
* :mod:`._outbox`: the journal emit() writes to, and its lock.
* :mod:`._adoption`: journals whose owner is gone, found by their lock and adopted.
* :mod:`._segments`: journal records and segments on disk; a cursor that reads and acks.
* :mod:`._owner`: the owner id naming a journal.
* :mod:`._publisher` and :mod:`._options`: leaves, the broker-side protocol and the
  strategy options.
"""

from __future__ import annotations

from ._engine import Delivery
from ._options import DELIVERY_OPTIONS, retry_options
from ._publisher import PartialDelivery, Publisher

__all__ = ["DELIVERY_OPTIONS", "Delivery", "PartialDelivery", "Publisher", "retry_options"]
