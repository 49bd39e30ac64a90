"""instrument: image lifecycle notifications for Glance-shaped image APIs.

The public API is re-exported here; everything else is an implementation detail.
"""

from __future__ import annotations

from .config import Settings
from .decorators import Instrumentation, instrument_class
from .events import (
    ERROR,
    EVENT_TYPES,
    IMAGE_ACTIVATE,
    IMAGE_CREATE,
    IMAGE_DELETE,
    IMAGE_PREPARE,
    IMAGE_SEND,
    IMAGE_UPDATE,
    IMAGE_UPLOAD,
    INFO,
    PRIORITIES,
    WARN,
    Notification,
)
from .exceptions import ConfigError, DeliveryError, InstrumentError, StrategyError
from .middleware import NotificationMiddleware
from .notifier import Notifier
from .payloads import error_payload, image_payload, send_payload
from .sending import count_sent
from .strategies.base import Strategy

__version__ = "0.1.0.dev0"

__all__ = [
    "ERROR",
    "EVENT_TYPES",
    "IMAGE_ACTIVATE",
    "IMAGE_CREATE",
    "IMAGE_DELETE",
    "IMAGE_PREPARE",
    "IMAGE_SEND",
    "IMAGE_UPDATE",
    "IMAGE_UPLOAD",
    "INFO",
    "PRIORITIES",
    "WARN",
    "ConfigError",
    "DeliveryError",
    "InstrumentError",
    "Instrumentation",
    "Notification",
    "NotificationMiddleware",
    "Notifier",
    "Settings",
    "Strategy",
    "StrategyError",
    "count_sent",
    "error_payload",
    "image_payload",
    "instrument_class",
    "send_payload",
]
