"""The delivery engine shared by the broker strategies: emit enqueues, a worker publishes."""

from __future__ import annotations

from ._engine import Delivery
from ._options import DELIVERY_OPTIONS, retry_options
from ._publisher import Publisher

__all__ = ["DELIVERY_OPTIONS", "Delivery", "Publisher", "retry_options"]
