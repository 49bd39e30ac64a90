"""Finding strategies by name.

Strategies are registered under the entry-point group ``instrument.strategies``;
the built-ins are registered there too and are also known here, so a source
checkout that was never installed still finds them. Classes are imported only
when selected, so a missing optional client (kombu, proton) never breaks
``import instrument``.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Final

from ..exceptions import ConfigError
from .base import Strategy

if TYPE_CHECKING:
    from ..config import Settings
    from ..options import Option

__all__ = [
    "ENTRY_POINT_GROUP",
    "Strategy",
    "available_strategies",
    "create_strategies",
    "strategy_class",
    "strategy_options",
]

logger = logging.getLogger("instrument.strategies")

ENTRY_POINT_GROUP: Final = "instrument.strategies"

_BUILTIN: Final = {
    "noop": "instrument.strategies.noop:NoopStrategy",
    "logging": "instrument.strategies.log:LoggingStrategy",
    "memory": "instrument.strategies.memory:MemoryStrategy",
    "rabbit": "instrument.strategies.rabbit:RabbitStrategy",
    "qpid": "instrument.strategies.qpid:QpidStrategy",
}


def available_strategies() -> list[str]:
    """The names of every strategy that can be selected, sorted."""
    names = set(_BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def strategy_class(name: str) -> type[Strategy]:
    """The strategy class registered as *name*; ConfigError if there is none."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                loaded = ep.load()
            except Exception as exc:  # a plugin that is installed but broken
                problem = f"{type(exc).__name__}: {exc}"
                raise ConfigError(
                    "strategy", name, f"a strategy whose entry point {ep.value} loads ({problem})"
                ) from exc
            return _checked(name, loaded)
    if name in _BUILTIN:
        module_name, _, attribute = _BUILTIN[name].partition(":")
        return _checked(name, getattr(importlib.import_module(module_name), attribute))
    raise ConfigError("strategy", name, "one of " + ", ".join(available_strategies()))


def create_strategies(settings: Settings) -> list[Strategy]:
    """Build every strategy that *settings* selects, validating their options now."""
    created: list[Strategy] = []
    try:
        for name in dict.fromkeys(settings.strategies):
            created.append(strategy_class(name).from_settings(settings))
    except BaseException:
        for strategy in created:
            strategy.close()
        raise
    return created


def strategy_options() -> tuple[Option, ...]:
    """The options of every strategy that can be loaded, each name once."""
    seen: dict[str, Option] = {}
    for name in available_strategies():
        try:
            cls = strategy_class(name)
        except Exception as exc:  # a broken third-party plugin must not hide the others
            logger.debug("cannot load strategy %r: %s", name, exc)
            continue
        for option in cls.options:
            seen.setdefault(option.name, option)
    return tuple(seen.values())


def _checked(name: str, obj: object) -> type[Strategy]:
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise ConfigError("strategy", name, "a registered instrument.strategies.Strategy subclass")
    return obj
