"""The delivery engine shared by the broker strategies: emit enqueues, a worker publishes."""

from __future__ import annotations

from ._engine import DELIVERY_OPTIONS, Delivery, Publisher, retry_options

__all__ = ["DELIVERY_OPTIONS", "Delivery", "Publisher", "retry_options"]
