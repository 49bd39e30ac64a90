"""How an existing exchange or queue differs from the configuration, as RabbitMQ says it.

Used by :mod:`._topology`. A declare of an existing name with other properties fails
with PRECONDITION_FAILED naming the *first* inequivalent field and both values
(``inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received none but
current is the value 'quorum' of type 'longstr'``): :func:`parse_inequivalence` turns
that into a :class:`Difference` (values typed as the broker printed them), which
:meth:`Difference.apply` folds into the next probe. A message it does not understand
gives None: the caller then reports the broker's text as it is.

Warnings are once per name and process (:func:`warn_differences`): a reconnect
declares again and must not repeat them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from typing import Any, Final

__all__ = ["Difference", "note_not_compared", "parse_inequivalence", "warn_differences"]

_INEQUIVALENT: Final = re.compile(
    r"inequivalent arg '(?P<field>[^']+)' .*?: received (?P<received>.+?) "
    r"but current is (?P<current>none|'.*'|the value '.*' of type '[^']+')$"
)
_VALUE: Final = re.compile(r"the value '(?P<value>.*)' of type '(?P<type>[^']+)'|'(?P<plain>.*)'")
_INTEGERS: Final = {"signedint", "long", "short", "byte", "unsignedint", "unsignedshort"}


@dataclasses.dataclass(frozen=True)
class Difference:
    """One field whose existing value (*current*) is not the configured one (*wanted*)."""

    field: str
    wanted: Any
    current: Any

    def apply(self, spec: dict[str, Any]) -> dict[str, Any]:
        """*spec* with this field set as it exists (an argument that does not: removed)."""
        updated = {k: v for k, v in spec.items() if k != self.field}
        if self.current is not None or not self.field.startswith("x-"):
            updated[self.field] = self.current
        return updated

    def __str__(self) -> str:
        if self.field == "?":
            return f"(not understood: {self.current})"
        return f"{self.field}={_show(self.current)} (configured: {_show(self.wanted)})"


def parse_inequivalence(text: str) -> Difference | None:
    """The field and the two values of RabbitMQ's ``inequivalent arg`` message, else None."""
    match = _INEQUIVALENT.search(text)
    if match is None:
        return None
    try:
        wanted, current = (_value(match[group]) for group in ("received", "current"))
    except ValueError:
        return None
    return Difference(match["field"], wanted, current)


def _value(text: str) -> Any:
    """A value as RabbitMQ prints it (``none``, ``'true'``, ``the value '5' of type 'long'``)."""
    if text == "none":
        return None
    match = _VALUE.fullmatch(text)
    if match is None:
        raise ValueError(text)
    if match["plain"] is not None:
        plain = match["plain"]
        return {"true": True, "false": False}.get(plain, plain)
    value, kind = match["value"], match["type"]
    if kind in _INTEGERS:
        return int(value)
    if kind == "bool":
        return value == "true"
    if kind in ("double", "float"):
        return float(value)
    if kind == "longstr":
        return value
    raise ValueError(text)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


# --------------------------------------------------------------------------- warnings

_warned: set[tuple[str, ...]] = set()
_warned_lock = threading.Lock()


def _first_time(*key: str) -> bool:
    """True the first time *key* is seen in this process (the per-name once)."""
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
        return True


def warn_differences(
    prefix: str, kind: str, names: list[str], differences: tuple[Difference, ...]
) -> None:
    """One warning for *names* (those not warned about before) that differ alike."""
    fresh = [name for name in names if _first_time(prefix, kind, name)]
    if not fresh:
        return
    one = len(fresh) == 1
    logging.getLogger(f"instrument.strategies.{prefix}").warning(
        "%s: %s %s already exist%s with %s; %s used as %s (only what is missing is "
        "created as configured)",
        prefix,
        kind if one else f"{kind}s",
        ", ".join(repr(name) for name in fresh),
        "s" if one else "",
        ", ".join(str(d) for d in differences),
        "it is" if one else "they are",
        "it is" if one else "they are",
    )


def note_not_compared(prefix: str, kind: str, name: str, reason: str) -> None:
    if _first_time(prefix, kind, name):
        logging.getLogger(f"instrument.strategies.{prefix}").info(
            "%s: %s %r exists and is used as it is; not compared with the configuration "
            "(no configure permission: %s)",
            prefix,
            kind,
            name,
            reason,
        )
