"""Running kit code next to application code: whatever the kit raises is logged, never raised."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["guard"]

log = logging.getLogger("instrument")


def guard(function: Callable[..., None], *args: Any) -> None:
    """Call ``function(*args)``; log (never raise) what it raises."""
    try:
        function(*args)
    except Exception:
        log.exception("instrument: notification handling failed; the request is unaffected")
