"""A request body that says when the application first reads it.

Used for image.prepare of an upload whose image the filter has already seen: the
application reading the image data is the proof that it accepted the upload (the
caller's rights, the image's state), which otherwise takes a metadata subrequest
before the application is called. Decisions:

* **Every way in counts**: ``read``, ``readline``, ``readlines``, ``readinto`` (where
  the server's stream has it), iteration and ``next()`` run the hook before they read;
  everything else passes through (a :class:`wrapt.ObjectProxy`, so ``isinstance``
  checks and attributes still see the server's object). A read of nothing
  (``read(0)``, an empty buffer) is not a read: it takes no data.
* **Once, and never in the way**: the hook runs before the first read only, and a
  hook that raises is logged and forgotten; the read goes on either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import wrapt

__all__ = ["FirstRead"]

log = logging.getLogger("instrument.middleware")

if TYPE_CHECKING:
    _Proxy = wrapt.ObjectProxy[Any]
else:
    _Proxy = wrapt.ObjectProxy


class FirstRead(_Proxy):
    """*stream* (``wsgi.input``), calling *hook* once before the first read of it.

    Build it with :meth:`wrap`, which keeps ``readinto`` to the streams that have it.
    """

    def __init__(self, stream: Any, hook: Callable[[], None]) -> None:
        super().__init__(stream)
        self._self_hook: Callable[[], None] | None = hook

    @classmethod
    def wrap(cls, stream: Any, hook: Callable[[], None]) -> FirstRead:
        """*stream* watched; with ``readinto`` only if *stream* has it."""
        return (_FirstReadInto if hasattr(stream, "readinto") else cls)(stream, hook)

    def _self_reading(self, *args: Any) -> None:
        if args and args[0] == 0:
            return  # read(0): no data taken, nothing accepted
        hook, self._self_hook = self._self_hook, None
        if hook is not None:
            try:
                hook()
            except Exception:
                log.exception("instrument: the hook before the first read of a body failed")

    def read(self, *args: Any) -> Any:
        self._self_reading(*args)
        return self.__wrapped__.read(*args)

    def readline(self, *args: Any) -> Any:
        self._self_reading(*args)
        return self.__wrapped__.readline(*args)

    def readlines(self, *args: Any) -> Any:
        self._self_reading()
        return self.__wrapped__.readlines(*args)

    def __iter__(self) -> Iterator[Any]:
        self._self_reading()
        return iter(self.__wrapped__)

    def __next__(self) -> Any:
        self._self_reading()
        return next(self.__wrapped__)


class _FirstReadInto(FirstRead):
    """A :class:`FirstRead` of a stream that has ``readinto``."""

    def readinto(self, buffer: Any) -> Any:
        self._self_reading(len(memoryview(buffer)))
        return self.__wrapped__.readinto(buffer)
