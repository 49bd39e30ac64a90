"""Rate-limited logging: a failing broker must not flood the service's log."""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    """Log the first occurrence of each key at once, then at most once per *interval*.

    A later line says how many occurrences were suppressed since the previous one.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(
        self, key: str, level: int, message: str, *args: object, exc_info: bool = False
    ) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, message, *args, exc_info=exc_info)
