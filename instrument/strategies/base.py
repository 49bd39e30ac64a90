"""The base class of every strategy.

A strategy takes finished :class:`~instrument.events.Notification` objects and
delivers them somewhere. It is built from settings by :meth:`Strategy.from_settings`,
which reads (and so validates) every option the strategy declares in ``options``:
the option names are the constructor's keyword arguments.

Synchronous strategies (noop, logging, memory) deliver inside :meth:`emit`; the
Notifier counts what they send and what raises. Broker strategies only enqueue in
:meth:`emit` and report their own ``sent``/``dropped`` counters from :meth:`stats`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..options import Option

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from ..config import Settings
    from ..events import Notification

__all__ = ["Strategy"]


class Strategy(abc.ABC):
    """Deliver notifications. Subclass it and register it under ``instrument.strategies``."""

    #: The name operators select it by (``strategy = rabbit``).
    name: ClassVar[str] = ""
    #: The options it reads; each is a keyword argument of the constructor.
    options: ClassVar[tuple[Option, ...]] = ()
    #: True when emit() only enqueues and stats() reports sent/dropped itself.
    asynchronous: ClassVar[bool] = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Build the strategy from settings, validating every option it declares."""
        return cls(**{option.name: settings.get(option) for option in cls.options})

    @abc.abstractmethod
    def emit(self, notification: Notification) -> None:
        """Deliver (or enqueue) one notification. May raise; the Notifier isolates it."""

    def check(self, timeout: float = 10.0) -> None:
        """Prove the strategy can deliver now, or raise StrategyError saying why."""
        return None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything accepted so far is delivered; False on timeout."""
        return True

    def close(self) -> None:
        """Release connections and threads. Idempotent."""
        return None

    def stats(self) -> Mapping[str, Any]:
        """Counters of the strategy's own; asynchronous strategies report sent/dropped here."""
        return {}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
