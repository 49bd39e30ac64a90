"""WSGI vocabulary shared by the middleware, the decorators and the download counter.

A leaf module: it imports nothing from the kit, so anything may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = ["Environ", "StartResponse", "WSGIApp", "close_iterable", "status_code"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

# A list or tuple (the commonest body) has no close(): skip a lookup that would
# build an AttributeError only to discard it.
_PLAIN_SEQUENCES: Final = frozenset({list, tuple})


def close_iterable(iterable: Iterable[bytes]) -> None:
    """Call the iterable's ``close()`` if it has one (PEP 3333); the caller ensures once."""
    if type(iterable) in _PLAIN_SEQUENCES:
        return
    close = getattr(iterable, "close", None)
    if close is not None:
        close()


def status_code(status: str | None) -> int:
    """The numeric code of a WSGI status line (``"404 Not Found"`` -> 404); 0 if malformed."""
    try:
        return int(str(status)[:3])
    except ValueError:
        return 0
