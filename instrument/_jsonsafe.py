"""JSON-safe values: conversion, with the kit's only removal of keys in the same pass.

The Notifier runs :func:`jsonable` on every payload when it builds a notification
(:meth:`~instrument.events.Notification.create`), so this is the one place where the
credential-bearing keys (and the operator's ``redact`` keys) are removed, at any depth.
Credentials inside URLs of a string are masked here too (:func:`mask_credentials`).
:mod:`instrument.payloads` builds the payloads and re-exports what is public here.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import json
import logging
import math
import operator
import pathlib
import re
import uuid
from collections.abc import Collection, Mapping
from typing import Any, Final

__all__ = [
    "CUT_MARKER",
    "JSONSafe",
    "dataclass_fields",
    "finite_floats",
    "jsonable",
    "mask_credentials",
    "masked_strings",
    "model_fields",
]

# The logger payload conversion has always used: operators' logging configs name it.
log = logging.getLogger("instrument.payloads")

# user:password@ in a URL of an exception text (a store or copy-from location).
# Up to the last @ of the URL: secrets may hold "/" or "@" (S3 keys do); masking too much
# is better than leaking.
_USERINFO: Final = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)\S*@")


def mask_credentials(text: str) -> str:
    """*text* with the ``user:password@`` of every URL in it replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text) if "://" in text else text


def masked_strings(value: Any) -> Any:
    """JSON data with :func:`mask_credentials` applied to every string in it (a copy)."""
    if isinstance(value, str):
        return mask_credentials(value)
    if isinstance(value, list):
        return [masked_strings(item) for item in value]
    if isinstance(value, dict):
        return type(value)((key, masked_strings(item)) for key, item in value.items())
    return value


def dataclass_fields(value: Any) -> dict[str, Any]:
    """A dataclass instance's fields, one level deep.

    Not :func:`dataclasses.asdict`: it deep-copies, which fails on locks, files, sockets.
    """
    return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}


class JSONSafe(dict[str, Any]):
    """A dict known to hold only JSON values, e.g. parsed from a JSON response.

    :func:`jsonable` does not copy one: it only removes the redacted keys (copying
    just the parts that change). That saves the per-key conversion on the middleware's
    hot path, where image metadata comes straight from ``json.loads``. Treat it as
    read-only once handed to a Notifier: notifications may share it.
    """

    __slots__ = ()


def jsonable(value: Any, without: Collection[str] = frozenset()) -> Any:
    """Turn *value* into something :func:`json.dumps` accepts, without ever raising.

    Datetimes become ISO 8601 UTC with ``Z`` (naive ones are taken as UTC, Glance
    stores UTC); UUIDs, decimals, paths and enums become their string or value; sets
    and tuples become lists; dataclasses and objects with ``to_dict()``/``as_dict()``
    become dicts. Anything else is replaced by its ``repr`` and logged once per type.
    Mapping keys in *without* (compared in lower case) are dropped at any depth.
    Non-finite floats become their name (``"nan"``, ``"inf"``). Structures nested
    deeper than 32 levels are cut there, and a mapping so cut is marked
    ``"truncated": true``.
    """
    hidden = frozenset(without)
    try:
        return _convert(value, 0, hidden)
    except (_TooDeep, RecursionError):
        return _cut_deep(value, hidden)


_MAX_DEPTH: Final = 32
#: What stands where a payload was nested too deeply.
CUT_MARKER: Final = "<cut: nested too deeply>"


class _TooDeep(Exception):
    """Raised by the fast conversion pass; :func:`_cut_deep` then cuts and marks."""


def _cut_deep(value: Any, without: frozenset[str]) -> Any:
    """The slow path for a payload nested too deeply: cut at the limit, mark, convert."""
    try:
        result = _convert(_pruned(value, 0), 0, without)
    except (_TooDeep, RecursionError):  # a model that converts differently a second time
        return CUT_MARKER
    if isinstance(result, dict):
        result["truncated"] = True
    return result


def _pruned(value: Any, depth: int) -> Any:
    value = _opened(value)
    if depth >= _MAX_DEPTH:
        return CUT_MARKER if isinstance(value, (Mapping, list, tuple, set, frozenset)) else value
    if isinstance(value, Mapping):
        return {key: _pruned(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_pruned(item, depth + 1) for item in value]
    return value


def model_fields(value: Any, default: Any = None) -> Any:
    """What a model object converts to: a dataclass's fields, or the result of its
    ``to_dict()``/``as_dict()`` (whatever that raises, raised); *default* for anything
    else."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclass_fields(value)
    for method in ("to_dict", "as_dict"):
        converter = getattr(value, method, None)
        if callable(converter):
            return converter()
    return default


_NOT_A_MODEL: Final = object()


def _opened(value: Any) -> Any:
    """A model object as what it converts to, so that the slow path can cut a chain of
    models too; anything else, or a model whose converter fails, as it is (reported
    where it stands by the conversion)."""
    if isinstance(value, (Mapping, list, tuple, set, frozenset, str, bytes, int, float)):
        return value
    try:
        return model_fields(value, value)
    except Exception:
        return value


_reported_types: set[type] = set()
# Values taken as they are. A str is taken as it is unless it holds a URL ("://"),
# whose user:password@ is masked (a store URL in an image property).
_PLAIN: Final = frozenset({int, bool, type(None)})


def _convert(value: Any, depth: int, without: frozenset[str]) -> Any:
    # Exact-type checks first: payloads are mostly plain dicts of str/int/None.
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is str:
        return mask_credentials(value)
    if kind is JSONSafe:
        return _redact_json(value, without, depth)
    if depth > _MAX_DEPTH:
        raise _TooDeep
    if kind is dict or isinstance(value, Mapping):
        return _convert_mapping(value, depth, without)
    if kind is list or isinstance(value, (list, tuple, set, frozenset)):
        return [
            item
            if type(item) in _PLAIN or (type(item) is str and "://" not in item)
            else _convert(item, depth + 1, without)
            for item in value
        ]
    if isinstance(value, (bool, int, str)):  # subclasses (IntEnum members are enums, below)
        return (
            value if not isinstance(value, enum.Enum) else _convert(value.value, depth + 1, without)
        )
    if kind is float:
        return value if value == value and value not in (_INF, -_INF) else str(value)
    return _convert_scalar(value, depth, without)


_INF: Final = float("inf")


def finite_floats(value: Any) -> Any:
    """*value* (JSON data) with every non-finite float as its name (``"inf"``, ``"nan"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [finite_floats(item) for item in value]
    if isinstance(value, dict):
        return {key: finite_floats(item) for key, item in value.items()}
    return value


def _convert_mapping(
    value: Mapping[Any, Any], depth: int, without: frozenset[str]
) -> dict[str, Any]:
    result = {
        (key if type(key) is str else _key(key)): (
            item
            if type(item) in _PLAIN or (type(item) is str and "://" not in item)
            else _convert(item, depth + 1, without)
        )
        for key, item in value.items()
    }
    # Keys to drop are rare, so deleting them afterwards is cheap.
    if without and _has_hidden_key(result, without):
        for key in [key for key in result if key.lower() in without]:
            del result[key]
    return result


def _redact_json(value: Any, without: frozenset[str], depth: int = 0) -> Any:
    """*value* (JSON data) without the keys in *without*; unchanged parts are shared."""
    if depth > _MAX_DEPTH:
        raise _TooDeep
    if isinstance(value, list):
        if _SCALARS.issuperset(map(type, value)):
            return value  # a list of scalars (tags): nothing to look into
        items = [_redact_json(item, without, depth + 1) for item in value]
        return value if all(map(operator.is_, items, value)) else items
    if not isinstance(value, dict) or not without:
        return value
    result = value
    if _has_hidden_key(value, without):
        result = {key: item for key, item in value.items() if key.lower() not in without}
    for key, item in result.items():
        if item and type(item) not in _SCALARS:  # an empty one has nothing to hide
            stripped = _redact_json(item, without, depth + 1)
            if stripped is not item:
                if result is value:
                    result = dict(value)
                result[key] = stripped
    return result


# Exact types, so that a subclass (an OrderedDict in a list, say) is still looked into.
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
# Per redaction set, keys already seen not to be hidden. Image payloads repeat the same
# few dozen keys, so lower-casing each key of each payload is mostly avoidable; the
# memo is bounded so that a stream of invented keys cannot grow it without end.
_survivors: dict[frozenset[str], set[str]] = {}
_SURVIVORS_MAX: Final = 4096
_SURVIVOR_SETS_MAX: Final = 64


def _has_hidden_key(mapping: Mapping[str, Any], without: frozenset[str]) -> bool:
    survivors = _survivors.get(without)
    if survivors is None:
        if len(_survivors) >= _SURVIVOR_SETS_MAX:  # redaction sets are few: one per Notifier
            _survivors.clear()
        survivors = _survivors.setdefault(without, set())
    if survivors.issuperset(mapping):
        return False
    hidden = False
    for key in mapping:
        if key.lower() in without:
            hidden = True
        elif len(survivors) < _SURVIVORS_MAX:
            survivors.add(key)
    return hidden


def _convert_scalar(value: Any, depth: int, without: frozenset[str]) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (_INF, -_INF) else str(value)
    if isinstance(value, _dt.datetime):
        return _iso_utc(value)
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return _convert(value.value, depth + 1, without)
    if isinstance(value, (uuid.UUID, decimal.Decimal, pathlib.PurePath)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    try:
        fields = model_fields(value, _NOT_A_MODEL)
        if fields is not _NOT_A_MODEL:
            return _convert(fields, depth + 1, without)
    except (_TooDeep, RecursionError):
        raise  # nested too deeply through models: the slow path cuts and marks
    except Exception as exc:  # a broken model must not break the request
        return _unserialisable(value, f"its conversion raised {exc!r}")
    return _unserialisable(value, "no JSON form")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    converted = _convert(key, _MAX_DEPTH, frozenset())
    return converted if isinstance(converted, str) else json.dumps(converted)


def _iso_utc(moment: _dt.datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return moment.isoformat() + "Z"


def _unserialisable(value: Any, reason: str) -> str:
    kind = type(value)
    if kind not in _reported_types:
        _reported_types.add(kind)
        log.warning(
            "payload value of type %s.%s is not JSON-serialisable (%s); sending its repr",
            kind.__module__,
            kind.__qualname__,
            reason,
        )
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {kind.__qualname__}>"
