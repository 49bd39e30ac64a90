"""Settings: one object built from a paste ``local_conf``, keyword arguments or the environment.

Option names are Glance's where Glance had one (``notifier_strategy``, ``rabbit_*``,
``qpid_*``), so an operator's existing configuration works unchanged. Precedence is
keyword arguments over the mapping over ``INSTRUMENT_*`` environment variables over
defaults: explicit configuration wins, the environment fills gaps (containers).

Values are parsed when first read, by the :class:`~instrument.options.Option` that
declares them; the Notifier reads every option of its strategies at construction,
so a bad value is a :class:`~instrument.exceptions.ConfigError` at start-up, not a
surprise on the first request.

Settings know no option but the core ones: whoever assembles the pieces (the
Notifier, the paste filter, the ``check`` command) hands down the options its parts
declare, for :meth:`Settings.warn_unknown`.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Final

from .options import Option, string, string_list

__all__ = [
    "CORE_OPTIONS",
    "ENV_PREFIX",
    "Settings",
    "UnknownOptionWarning",
]

ENV_PREFIX: Final = "INSTRUMENT_"

CORE_OPTIONS: Final = (
    Option(
        "strategy",
        ("noop",),
        "Where notifications go: noop, logging, memory, rabbit, qpid or a third-party "
        "strategy; a comma-separated list sends to each of them.",
        string_list,
        aliases=("notifier_strategy",),
    ),
    Option(
        "publisher_id",
        None,
        "The envelope's publisher_id. Default: the host name.",
        string,
        aliases=("default_publisher_id",),
    ),
    Option(
        "disabled_notifications",
        (),
        "Event types not to emit: an exact type (image.send) or a group (image).",
        string_list,
    ),
    Option(
        "redact",
        (),
        "Extra image metadata keys to remove from payloads (location, locations and "
        "direct_url are always removed).",
        string_list,
    ),
)

# Keys that PasteDeploy puts in local_conf/global_conf for its own use.
_PASTE_KEYS: Final = frozenset({"use", "paste.filter_factory", "__file__", "here", "next"})


class UnknownOptionWarning(UserWarning):
    """An option name that no part of the kit knows; probably a typo."""


class Settings:
    """A read-only view of the configuration, with typed access through options."""

    __slots__ = ("_cache", "_layers", "_values")

    def __init__(self, values: Mapping[str, Any] | None = None, *lower: Mapping[str, Any]) -> None:
        """*values*, then each of *lower* for what it does not give (under any name)."""
        self._layers = tuple(_normalised(layer) for layer in (values or {}, *lower))
        self._values: dict[str, Any] = {}
        for layer in reversed(self._layers):
            self._values.update(layer)
        self._cache: dict[str, Any] = {}

    @classmethod
    def load(
        cls,
        mapping: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Settings:
        """*kwargs*, then *mapping*, then the environment's ``INSTRUMENT_*`` variables.

        Precedence is by source: an option given in a higher source under any of its
        names (Glance's ``notifier_strategy`` or ``strategy``) wins over the same option
        in a lower one, whatever name it has there.
        """
        environment = _from_environ(os.environ if environ is None else environ)
        return cls(kwargs, mapping or {}, environment)

    def get(self, option: Option) -> Any:
        """The typed value of *option*: given under its name or an alias, else its default."""
        if option.name not in self._cache:
            self._cache[option.name] = self._parse(option)
        return self._cache[option.name]

    def names(self) -> frozenset[str]:
        return frozenset(self._values)

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(name.lower() for name in self.get(CORE_OPTIONS[0])) or ("noop",)

    @property
    def publisher_id(self) -> str | None:
        value: str | None = self.get(CORE_OPTIONS[1])
        return value or None

    @property
    def disabled_notifications(self) -> tuple[str, ...]:
        value: tuple[str, ...] = self.get(CORE_OPTIONS[2])
        return value

    @property
    def redact(self) -> tuple[str, ...]:
        value: tuple[str, ...] = self.get(CORE_OPTIONS[3])
        return value

    def warn_unknown(self, known: Iterable[Option]) -> list[str]:
        """Warn once per option name that none of *known* declares; return those names."""
        names = {name for option in known for name in option.names}
        unknown = sorted(self._values.keys() - names)
        for name in unknown:
            hint = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            suggestion = f" (did you mean {hint[0]}?)" if hint else ""
            warnings.warn(
                f"unknown instrument option {name!r}{suggestion}; it is ignored",
                UnknownOptionWarning,
                stacklevel=3,
            )
        return unknown

    def _parse(self, option: Option) -> Any:
        for layer in self._layers:
            for name in option.names:
                if name in layer:
                    return option.parse(name, layer[name])
        return option.default

    def __repr__(self) -> str:
        return f"Settings({sorted(self._values)!r})"


def _normalise(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def _normalised(values: Mapping[str, Any]) -> dict[str, Any]:
    """*values* under normalised names, without PasteDeploy's own keys."""
    return {
        _normalise(key): value
        for key, value in values.items()
        if _normalise(key) not in _PASTE_KEYS
    }


def _from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        _normalise(key[len(ENV_PREFIX) :]): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX)
    }
