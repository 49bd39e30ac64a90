"""The base of the broker strategies: a :class:`~instrument.delivery.Delivery` in front.

:meth:`emit` only enqueues; the engine's worker publishes through the subclass's
:class:`~instrument.delivery.Publisher`. A subclass says which client it needs
(``client``), turns its parsed options into a target
(:meth:`make_target`) and makes publishers for a target (:meth:`publisher`).

Decisions:

* **Options are parsed once.** :meth:`from_settings` hands the values
  ``Settings.get`` parsed straight to :meth:`_start`; only keyword arguments given to
  the constructor are parsed (validated) there, by :func:`._broker.parse_options`.
* :meth:`check` uses a fresh publisher whose target shares the timeout among the hosts
  (:func:`._broker.check_target`); it never touches the delivery worker.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from ..delivery import DELIVERY_OPTIONS, Delivery, Publisher
from ..exceptions import ConfigError, StrategyError
from ._broker import check_target, parse_options
from .base import Strategy

if TYPE_CHECKING:
    from typing_extensions import Self

    from ..config import Settings
    from ..events import Notification

__all__ = ["BrokerStrategy", "Client"]


class Client(NamedTuple):
    """The client library a broker strategy needs."""

    module: str  # imported to see whether it is installed
    package: str  # its distribution, as named to the operator
    extra: str  # the extra of instrument that installs it


class BrokerStrategy(Strategy):
    """A strategy whose notifications go through the shared delivery engine."""

    asynchronous: ClassVar[bool] = True
    #: The client library the strategy needs.
    client: ClassVar[Client]

    #: The parsed options, by name.
    config: dict[str, Any]
    #: What the publishers need: the subclass's frozen dataclass (see :meth:`make_target`).
    target: Any

    def __init__(self, **values: Any) -> None:
        """Keyword arguments are the option names; the values given are parsed here."""
        self._start(parse_options(self.options, values, type(self).__name__))

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """As :meth:`Strategy.from_settings`; a ConfigError naming the extra without the client.

        The values ``Settings.get`` parsed are used as they are, not parsed again.
        """
        module, package, extra = cls.client
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                "strategy", cls.name, f"{package} installed (pip install 'instrument[{extra}]')"
            ) from None
        strategy = cls.__new__(cls)
        strategy._start({option.name: settings.get(option) for option in cls.options})
        return strategy

    def _start(self, config: dict[str, Any]) -> None:
        """Resolve the target from the parsed *config* and start the delivery engine."""
        self.config = config
        self.target = self.make_target(config)
        self._delivery = Delivery(self.new_publisher, name=self.name, **self.delivery_options())

    # Subclasses --------------------------------------------------------------------
    def make_target(self, config: Mapping[str, Any]) -> Any:
        """The publishers' target from the parsed options (ConfigError when inconsistent).

        A frozen dataclass with ``connect_timeout``, ``heartbeat`` and ``hosts``.
        """
        raise NotImplementedError

    def retry_settings(self) -> dict[str, Any]:
        """``max_retries``, ``retry_backoff`` and ``retry_max_backoff`` for the engine."""
        raise NotImplementedError

    def publisher(self, target: Any) -> Publisher:
        """A publisher for *target* (imports the client)."""
        raise NotImplementedError

    # Engine ------------------------------------------------------------------------
    def delivery_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~instrument.delivery.Delivery`."""
        return {option.name: self.config[option.name] for option in DELIVERY_OPTIONS} | (
            self.retry_settings()
        )

    def new_publisher(self) -> Publisher:
        """A publisher for the engine's worker (called in the worker thread)."""
        return self.publisher(self.target)

    # Strategy ----------------------------------------------------------------------
    def emit(self, notification: Notification) -> None:
        self._delivery.submit(notification)

    def check(self, timeout: float = 10.0) -> None:
        """Connect (and declare) now with a fresh connection; StrategyError saying why not."""
        publisher = self.publisher(check_target(self.target, timeout))
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
