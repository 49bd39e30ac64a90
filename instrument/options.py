"""Option declarations and the parsers that turn option text into typed values.

Every option the kit understands is declared once as an :class:`Option`, next to
the code that uses it (core options in :mod:`instrument.config`, strategy options
on their strategy class, middleware options in :mod:`instrument.middleware`). The
declaration is what validates a value, names the accepted values in errors, gives
"did you mean" hints and documents the option in the README (a test checks that).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from .exceptions import ConfigError

__all__ = [
    "MASK",
    "Option",
    "boolean",
    "choice",
    "integer",
    "number",
    "string",
    "string_list",
]

Parser = Callable[[str, Any], Any]

#: What is shown instead of a secret value (in errors, reprs, URLs).
MASK = "****"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclasses.dataclass(frozen=True)
class Option:
    """One configuration option.

    *parse* receives the option name and the raw value (a string from paste.ini or
    the environment, or any Python value from keyword arguments) and returns the
    typed value or raises :class:`ConfigError`. *aliases* are other accepted names,
    e.g. Glance's historic ``notifier_strategy`` for ``strategy``. *secret* marks
    values (passwords, URLs with credentials) that the kit never logs or shows; the
    configuration reference says so.

    Decision: a secret option's parser is wrapped once, here, so that no
    :class:`ConfigError` it raises carries the value, whatever its type (a number,
    bytes, a list): every caller of :attr:`parse` gets the masked error.
    """

    name: str
    default: Any
    help: str
    parse: Parser = dataclasses.field(default=lambda name, value: string(name, value))
    aliases: tuple[str, ...] = ()
    secret: bool = False

    def __post_init__(self) -> None:
        if self.secret:
            object.__setattr__(self, "parse", _masked(self.parse))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def _masked(parse: Parser) -> Parser:
    """*parse*, raising its ConfigError with the value shown as ``****``."""

    def parse_secret(name: str, value: Any) -> Any:
        try:
            return parse(name, value)
        except ConfigError as exc:
            raise ConfigError(exc.option, MASK, exc.accepted) from None

    return parse_secret


def string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(name, value, "a string")
    return value


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(name, value, "a boolean (true/false, yes/no, on/off, 1/0)")


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    """A parser for whole numbers within [minimum, maximum]."""

    def parse(name: str, value: Any) -> int:
        try:
            number_ = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ConfigError(name, value, _range_text("an integer", minimum, maximum)) from None
        if isinstance(value, bool) or not _within(number_, minimum, maximum):
            raise ConfigError(name, value, _range_text("an integer", minimum, maximum))
        return number_

    return parse


def number(minimum: float | None = None, maximum: float | None = None) -> Parser:
    """A parser for finite real numbers (seconds, factors) within [minimum, maximum].

    ``inf`` is refused like ``nan``: a timeout of infinity overflows the clocks and
    timers it is handed to, and would fail every delivery instead of the start-up.
    """
    accepted = _range_text("a finite number", minimum, maximum)

    def parse(name: str, value: Any) -> float:
        try:
            result = float(str(value).strip()) if not isinstance(value, (int, float)) else value
        except ValueError:
            raise ConfigError(name, value, accepted) from None
        finite = math.isfinite(result)
        if isinstance(value, bool) or not finite or not _within(result, minimum, maximum):
            raise ConfigError(name, value, accepted)
        return float(result)

    return parse


def choice(*accepted: str) -> Parser:
    """A parser that accepts one of *accepted*, case-insensitively."""

    def parse(name: str, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in accepted:
            raise ConfigError(name, value, "one of " + ", ".join(accepted))
        return text

    return parse


def string_list(name: str, value: Any) -> tuple[str, ...]:
    """A comma- (or whitespace-) separated list, or a Python sequence of strings."""
    if isinstance(value, str):
        items: Sequence[Any] = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        raise ConfigError(name, value, "a comma-separated list")
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(name, value, "a comma-separated list of names")
    return tuple(item.strip() for item in items if item.strip())


def _within(value: float, minimum: float | None, maximum: float | None) -> bool:
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


def _range_text(kind: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} from {minimum} to {maximum}"
    if minimum is not None:
        return f"{kind} >= {minimum}"
    if maximum is not None:
        return f"{kind} <= {maximum}"
    return kind
