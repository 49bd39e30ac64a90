"""The Notifier: builds envelopes, filters disabled events and fans out to strategies.

After construction a Notifier never raises into its caller: emitting is on the
request path of an image API, and a broken strategy must cost the request nothing.
Each strategy's failure is isolated from the others, logged (rate-limited) and
counted; :meth:`Notifier.stats` shows the counts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _capture
from ._ratelimit import RateLimitedLog
from .config import CORE_OPTIONS, Settings
from .events import ERROR, INFO, WARN, Notification, default_publisher_id
from .exceptions import StrategyError
from .payloads import hidden_keys
from .strategies import create_strategies, strategy_options
from .strategies.base import Strategy
from .strategies.noop import NoopStrategy

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from .options import Option

__all__ = ["Notifier"]

log = logging.getLogger("instrument.notifier")


class Notifier:
    """Emit notifications to one or more strategies.

    >>> from instrument import Notifier
    >>> from instrument.strategies.memory import MemoryStrategy
    >>> memory = MemoryStrategy()
    >>> notifier = Notifier(memory, publisher_id="glance-api-1")
    >>> notifier.info("image.create", {"id": "42", "name": "cirros"}).priority
    'INFO'
    >>> memory.notifications[0].payload
    {'id': '42', 'name': 'cirros'}
    """

    def __init__(
        self,
        strategies: Strategy | Sequence[Strategy] | None = None,
        *,
        publisher_id: str | None = None,
        disabled_notifications: Iterable[str] = (),
        redact: Iterable[str] = (),
    ) -> None:
        if strategies is None:
            strategies = [NoopStrategy()]
        elif isinstance(strategies, Strategy):
            strategies = [strategies]
        self.strategies: tuple[Strategy, ...] = tuple(strategies)
        self.publisher_id = publisher_id or default_publisher_id()
        self.disabled_notifications = tuple(disabled_notifications)
        self.redact = tuple(redact)
        self._hidden = hidden_keys(self.redact)
        self._disabled_exact = frozenset(self.disabled_notifications)
        self._disabled_groups = tuple(f"{group}." for group in self.disabled_notifications)
        self._counts = {id(s): {"sent": 0, "failed": 0} for s in self.strategies}
        self._targets = tuple((s, self._counts[id(s)]) for s in self.strategies)
        self._disabled_count = 0
        self._unbuildable_count = 0
        self._lock = threading.Lock()
        self._failures = RateLimitedLog(log)

    @classmethod
    def from_settings(cls, settings: Settings, *, also_known: Iterable[Option] = ()) -> Notifier:
        """Build a Notifier and its strategies; ConfigError for any bad option.

        Option names that neither the core, the installed strategies nor *also_known*
        (the options of the caller's own parts, e.g. the middleware's) declare are
        warned about as probable typos.
        """
        settings.warn_unknown((*CORE_OPTIONS, *strategy_options(), *also_known))
        return cls(
            create_strategies(settings),
            publisher_id=settings.publisher_id,
            disabled_notifications=settings.disabled_notifications,
            redact=settings.redact,
        )

    @classmethod
    def from_config(
        cls,
        mapping: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Notifier:
        """``Notifier.from_config({"notifier_strategy": "logging"})``, or keyword arguments."""
        return cls.from_settings(Settings.load(mapping, environ=environ, **kwargs))

    def info(self, event_type: str, payload: Any) -> Notification | None:
        return self.notify(INFO, event_type, payload)

    def warn(self, event_type: str, payload: Any) -> Notification | None:
        return self.notify(WARN, event_type, payload)

    def error(self, event_type: str, payload: Any) -> Notification | None:
        return self.notify(ERROR, event_type, payload)

    def notify(self, priority: str, event_type: str, payload: Any) -> Notification | None:
        """Emit one notification; returns it, or None when disabled or unbuildable."""
        if not self.is_enabled(event_type):
            with self._lock:
                self._disabled_count += 1
            return None
        try:
            notification = Notification.create(
                event_type,
                priority,
                payload,
                publisher_id=self.publisher_id,
                without=self._hidden,
            )
        except Exception:
            with self._lock:
                self._unbuildable_count += 1
            self._failures.log(
                "build", logging.ERROR, "cannot build %s notification", event_type, exc_info=True
            )
            return None
        self.send(notification)
        return notification

    def send(self, notification: Notification) -> None:
        """Hand a finished notification to every strategy, isolating their failures."""
        if _capture.sinks:
            _capture.deliver(notification)
        for strategy, counts in self._targets:
            try:
                strategy.emit(notification)
            except Exception as exc:
                with self._lock:
                    counts["failed"] += 1
                self._failures.log(
                    f"emit:{id(strategy)}",
                    logging.ERROR,
                    "strategy %s failed to emit %s %s: %s",
                    strategy.name,
                    notification.event_type,
                    notification.message_id,
                    exc,
                )
            else:
                with self._lock:
                    counts["sent"] += 1

    def is_enabled(self, event_type: str) -> bool:
        """False for an event type disabled exactly or through its group (``image``)."""
        if event_type in self._disabled_exact:
            return False
        return not (self._disabled_groups and event_type.startswith(self._disabled_groups))

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per strategy: ``sent``, ``failed``, ``dropped`` and the strategy's own.

        For asynchronous strategies ``accepted`` is what entered the queue and ``sent``
        what the broker confirmed. Under the key ``"notifier"``, ``disabled`` counts
        notifications not emitted because their event type is disabled, and
        ``unbuildable`` those whose payload could not be made into one (logged).
        """
        result: dict[str, dict[str, Any]] = {
            "notifier": {
                "disabled": self._disabled_count,
                "unbuildable": self._unbuildable_count,
            }
        }
        for strategy in self.strategies:
            counts = dict(self._counts[id(strategy)])
            row: dict[str, Any] = {"sent": counts["sent"], "failed": counts["failed"], "dropped": 0}
            if strategy.asynchronous:
                row["accepted"] = row.pop("sent")
                row["sent"] = 0
            row.update(_safe_stats(strategy))
            result[_unique_name(result, strategy.name)] = row
        return result

    def check(self, timeout: float = 10.0) -> None:
        """Run every strategy's start-up check; raises StrategyError naming the strategy."""
        for strategy in self.strategies:
            try:
                strategy.check(timeout)
            except StrategyError as exc:
                raise StrategyError(f"strategy {strategy.name!r}: {exc}") from exc

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for every strategy to deliver what it accepted; False if any timed out."""
        results = [_safe_call(strategy.flush, timeout) for strategy in self.strategies]
        return all(result is True for result in results)

    def close(self) -> None:
        """Close every strategy (asynchronous ones flush what they can first)."""
        for strategy in self.strategies:
            _safe_call(strategy.close)

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
        names = ",".join(strategy.name for strategy in self.strategies)
        return f"<Notifier publisher_id={self.publisher_id!r} strategies={names!r}>"


def _safe_stats(strategy: Strategy) -> Mapping[str, Any]:
    try:
        return strategy.stats()
    except Exception:
        log.exception("strategy %s: stats() failed", strategy.name)
        return {}


def _safe_call(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except Exception:
        log.exception("%r failed", function)
        return None


def _unique_name(taken: Mapping[str, Any], name: str) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}#{number}", number + 1
    return candidate
