"""The ``logging`` strategy: one JSON line per notification through standard logging.

Each notification goes to the logger ``instrument.notifications.<event_type>`` at the
level of its priority (INFO, WARNING, ERROR), so operators filter with ordinary
logging configuration. With ``log_file`` set the lines go to that file instead,
through a handler the strategy owns (and closes), whatever the logging tree says; a
line it cannot write (a full disk) fails the emit, so it is counted failed, and a file
moved or deleted under it is opened again.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from typing import TYPE_CHECKING, Final

from ..exceptions import ConfigError
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
            folder = os.path.dirname(os.path.abspath(log_file))
            if not os.path.isdir(folder):
                raise ConfigError("log_file", log_file, "a file in an existing directory")
            self._handler = _FileHandler(log_file, encoding="utf-8", delay=True)
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


class _FileHandler(logging.handlers.WatchedFileHandler):
    """The ``log_file`` handler: a line that cannot be written is the strategy's failure.

    logging's handlers print a write error to stderr and carry on, so the Notifier
    would count the notification sent. This one raises it (the Notifier counts it
    failed and logs it), drops what is still buffered of the line (so it does not come
    out later, twice), and starts the next line on a line of its own (a full disk may
    have taken part of the failed one). It reopens a file moved or deleted (rotation).
    """

    _broken_line = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._broken_line:
            self._broken_line = False
            _end_line(self.baseFilename)
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(Exception):  # its buffer holds the failed line
                stream.close()
        self._broken_line = True
        if error is not None:
            raise error


def _end_line(path: str) -> None:
    """End the last line of *path* if a failed write left it open (never cuts a byte)."""
    if not os.path.isfile(path):  # /dev/full, a pipe: nothing to mend
        return
    with contextlib.suppress(OSError), open(path, "ab+") as file:
        if file.seek(0, os.SEEK_END) == 0:
            return
        file.seek(-1, os.SEEK_END)
        if file.read(1) != b"\n":
            file.write(b"\n")  # append mode: at the end, whatever was read
