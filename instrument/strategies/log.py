"""The ``logging`` strategy: one JSON line per notification through standard logging.

Each notification goes to the logger ``instrument.notifications.<event_type>`` at the
level of its priority (INFO, WARNING, ERROR), so operators filter with ordinary
logging configuration. With ``log_file`` set the lines go to that file instead,
through a handler the strategy owns (and closes), whatever the logging tree says.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from ..options import Option, string
from .base import Strategy

if TYPE_CHECKING:
    from ..events import Notification

__all__ = ["LOGGER_PREFIX", "LoggingStrategy"]

LOGGER_PREFIX: Final = "instrument.notifications"

_LEVELS: Final = {"INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}


class LoggingStrategy(Strategy):
    """Write each notification as one JSON line to a logger or a file."""

    name = "logging"
    options = (
        Option(
            "log_file",
            None,
            "logging strategy: write notifications to this file instead of the "
            "instrument.notifications.<event_type> loggers.",
            string,
        ),
    )

    def __init__(self, log_file: str | None = None) -> None:
        self.log_file = log_file
        self._handler: logging.Handler | None = None
        if log_file:
            self._handler = logging.FileHandler(log_file, encoding="utf-8", delay=True)
            self._handler.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, notification: Notification) -> None:
        logger = logging.getLogger(f"{LOGGER_PREFIX}.{notification.event_type}")
        level = _LEVELS.get(notification.priority, logging.INFO)
        if self._handler is None:
            logger.log(level, "%s", notification.to_json())
            return
        record = logger.makeRecord(
            logger.name, level, __file__, 0, "%s", (notification.to_json(),), None
        )
        self._handler.handle(record)

    def close(self) -> None:
        if self._handler is not None:
            self._handler.close()
