"""The base of the broker strategies: a :class:`~instrument.delivery.Delivery` in front.

:meth:`emit` only enqueues; the engine's worker publishes through the subclass's
:class:`~instrument.delivery.Publisher`. A subclass says which client it needs
(``client``, ``extra``), parses its options into a target (:meth:`configure`), makes
publishers (:meth:`new_publisher`) and a short-lived one for :meth:`check`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..delivery import DELIVERY_OPTIONS, Delivery, Publisher
from ..exceptions import ConfigError, StrategyError
from .base import Strategy

if TYPE_CHECKING:
    from typing_extensions import Self

    from ..config import Settings
    from ..events import Notification

__all__ = ["BrokerStrategy"]


class BrokerStrategy(Strategy):
    """A strategy whose notifications go through the shared delivery engine."""

    asynchronous: ClassVar[bool] = True
    #: The client module the strategy needs, its distribution, and the extra installing it.
    client: ClassVar[str] = ""
    package: ClassVar[str] = ""
    extra: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        self.configure(values)
        self._delivery = Delivery(self.new_publisher, name=self.name, **self.delivery_options())

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """As :meth:`Strategy.from_settings`; a ConfigError naming the extra without the client."""
        try:
            importlib.import_module(cls.client)
        except ImportError:
            raise ConfigError(
                "strategy",
                cls.name,
                f"{cls.package} installed (pip install 'instrument[{cls.extra}]')",
            ) from None
        return super().from_settings(settings)

    # Subclasses --------------------------------------------------------------------
    #: The parsed options, by name (set by :meth:`configure`).
    config: dict[str, Any]

    def configure(self, values: Mapping[str, Any]) -> None:
        """Parse and validate the options into ``config`` (ConfigError), and the target."""
        raise NotImplementedError

    def delivery_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~instrument.delivery.Delivery`."""
        return {option.name: self.config[option.name] for option in DELIVERY_OPTIONS} | (
            self.retry_settings()
        )

    def retry_settings(self) -> dict[str, Any]:
        """``max_retries``, ``retry_backoff`` and ``retry_max_backoff`` for the engine."""
        raise NotImplementedError

    def new_publisher(self) -> Publisher:
        """A publisher for the engine's worker (called in the worker thread)."""
        raise NotImplementedError

    def check_publisher(self, timeout: float) -> Publisher:
        """A publisher whose connect() gives up within *timeout* seconds in all."""
        raise NotImplementedError

    # Strategy ----------------------------------------------------------------------
    def emit(self, notification: Notification) -> None:
        self._delivery.submit(notification)

    def check(self, timeout: float = 10.0) -> None:
        """Connect (and declare) now with a fresh connection; StrategyError saying why not."""
        publisher = self.check_publisher(timeout)
        try:
            publisher.connect()
        except StrategyError as exc:
            raise StrategyError(f"no broker reachable: {exc}") from None
        finally:
            publisher.close()

    def flush(self, timeout: float | None = None) -> bool:
        return self._delivery.flush(timeout)

    def close(self) -> None:
        self._delivery.close()

    def stats(self) -> Mapping[str, Any]:
        return self._delivery.stats()
