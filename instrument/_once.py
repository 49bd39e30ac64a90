"""Something that must happen once per process (a warning, an exit hook): :class:`run_once`.

A leaf module: it imports nothing from the kit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, ParamSpec

__all__ = ["run_once"]

P = ParamSpec("P")


class run_once(Generic[P]):
    """Call the wrapped function the first time only (thread-safe); later calls do nothing.

    ``done`` says whether it ran; a test may set it back to False.
    """

    def __init__(self, func: Callable[P, None]) -> None:
        self.__wrapped__ = func
        self.done = False
        self._lock = threading.Lock()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        with self._lock:
            if self.done:
                return
            self.done = True
        self.__wrapped__(*args, **kwargs)
