"""Event types, priorities and the notification envelope.

The envelope has exactly the fields of the specification, in Glance's wire format:
``message_id`` (a uuid4 string), ``publisher_id``, ``event_type``, ``priority``,
``timestamp`` (UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``) and ``payload``.

Payloads are made JSON-safe when the notification is built (see :func:`jsonable`),
so every strategy serialises the same value and a caller mutating its dict after the
call cannot change what is delivered.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import json
import logging
import operator
import pathlib
import random
import socket
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any, Final

__all__ = [
    "ERROR",
    "EVENT_TYPES",
    "IMAGE_ACTIVATE",
    "IMAGE_CREATE",
    "IMAGE_DELETE",
    "IMAGE_PREPARE",
    "IMAGE_SEND",
    "IMAGE_UPDATE",
    "IMAGE_UPLOAD",
    "INFO",
    "PRIORITIES",
    "WARN",
    "JSONSafe",
    "Notification",
    "jsonable",
    "utc_timestamp",
]

log = logging.getLogger("instrument.events")

IMAGE_CREATE: Final = "image.create"
IMAGE_PREPARE: Final = "image.prepare"
IMAGE_UPLOAD: Final = "image.upload"
IMAGE_ACTIVATE: Final = "image.activate"
IMAGE_SEND: Final = "image.send"
IMAGE_UPDATE: Final = "image.update"
IMAGE_DELETE: Final = "image.delete"

#: The seven event types of the specification, in lifecycle order.
EVENT_TYPES: Final = (
    IMAGE_CREATE,
    IMAGE_PREPARE,
    IMAGE_UPLOAD,
    IMAGE_ACTIVATE,
    IMAGE_SEND,
    IMAGE_UPDATE,
    IMAGE_DELETE,
)

INFO: Final = "INFO"
WARN: Final = "WARN"
ERROR: Final = "ERROR"

#: The priorities of the specification. Glance spells the middle one ``WARN``.
PRIORITIES: Final = (INFO, WARN, ERROR)

_TIMESTAMP_FORMAT: Final = "%Y-%m-%d %H:%M:%S.%f"


def utc_timestamp(moment: _dt.datetime | None = None) -> str:
    """Format *moment* (default: now) the way Glance did: ``2013-04-04 19:32:03.123456``.

    Unlike ``str(datetime)``, the microseconds are always present, so consumers can
    parse every timestamp with one format string.
    """
    if moment is None:
        return _now_timestamp()
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return moment.isoformat(" ", "microseconds")


# The request path builds an envelope per event; these two helpers are its hot spots.
# The formatted second is cached (one tuple, swapped atomically between threads).
_second: tuple[int, str] = (0, "")


def _now_timestamp() -> str:
    global _second
    whole, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    second = _second  # read once: another thread may swap it for the next second
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%d %H:%M:%S.", time.gmtime(whole)))
    return f"{second[1]}{nanoseconds // 1000:06d}"


_UUID4_CLEAR: Final = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_SET: Final = (0x4000 << 64) | (0x8000 << 48)


def new_message_id() -> str:
    """A random (version 4) UUID string, twice as fast as ``str(uuid.uuid4())``.

    Message ids need uniqueness, not secrecy, so :mod:`random` (which reseeds itself
    in a forked child) is enough.
    """
    digits = "%032x" % ((random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    """One notification, as it goes on the wire.

    Build them with :meth:`create`; the constructor takes the fields as they are.
    """

    message_id: str
    publisher_id: str
    event_type: str
    priority: str
    timestamp: str
    payload: Any

    @classmethod
    def create(
        cls,
        event_type: str,
        priority: str,
        payload: Any,
        *,
        publisher_id: str | None = None,
        without: frozenset[str] = frozenset(),
    ) -> Notification:
        """A new notification with a fresh uuid4, the current UTC time and a JSON-safe payload.

        Keys named in *without* (lower case) are left out of the payload's mappings at
        any depth, in the same pass that makes it JSON-safe.
        """
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
        # Positional, in field order: this runs on the request path for every event.
        return cls(
            new_message_id(),
            publisher_id or default_publisher_id(),
            event_type,
            priority,
            _now_timestamp(),
            _convert(payload, 0, without),
        )

    def to_dict(self) -> dict[str, Any]:
        """The envelope as a plain dict, fields in the specification's order."""
        return {
            "message_id": self.message_id,
            "publisher_id": self.publisher_id,
            "event_type": self.event_type,
            "priority": self.priority,
            "timestamp": self.timestamp,
            "payload": self.payload,
        }

    def to_json(self) -> str:
        """The envelope as a JSON document (never raises: the payload is already JSON-safe)."""
        return json.dumps(self.to_dict(), default=_last_resort, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        """Rebuild a notification from its wire form (what a consumer reads)."""
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})


def default_publisher_id() -> str:
    """The host name, as the specification says."""
    return socket.gethostname()


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
    """
    return _convert(value, 0, frozenset(without))


_MAX_DEPTH: Final = 32
_reported_types: set[type] = set()
_PLAIN: Final = frozenset({str, int, bool, type(None)})


def _convert(value: Any, depth: int, without: frozenset[str]) -> Any:
    # Exact-type checks first: payloads are mostly plain dicts of str/int/None.
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is JSONSafe:
        return _redact_json(value, without)
    if depth > _MAX_DEPTH:
        return _unserialisable(value, "nested too deeply")
    if kind is dict or isinstance(value, Mapping):
        return _convert_mapping(value, depth, without)
    if kind is list or isinstance(value, (list, tuple, set, frozenset)):
        return [
            item if type(item) in _PLAIN else _convert(item, depth + 1, without) for item in value
        ]
    if isinstance(value, (bool, int, str)):  # subclasses (IntEnum members are enums, below)
        return (
            value if not isinstance(value, enum.Enum) else _convert(value.value, depth + 1, without)
        )
    if kind is float:
        return value if value == value and value not in (_INF, -_INF) else str(value)
    return _convert_scalar(value, depth, without)


_INF: Final = float("inf")


def _convert_mapping(
    value: Mapping[Any, Any], depth: int, without: frozenset[str]
) -> dict[str, Any]:
    result = {
        (key if type(key) is str else _key(key)): (
            item if type(item) in _PLAIN else _convert(item, depth + 1, without)
        )
        for key, item in value.items()
    }
    # Keys to drop are rare, so deleting them afterwards is cheap.
    if without and _has_hidden_key(result, without):
        for key in [key for key in result if key.lower() in without]:
            del result[key]
    return result


def _redact_json(value: Any, without: frozenset[str]) -> Any:
    """*value* (JSON data) without the keys in *without*; unchanged parts are shared."""
    if isinstance(value, list):
        if _SCALARS.issuperset(map(type, value)):
            return value  # a list of scalars (tags): nothing to look into
        items = [_redact_json(item, without) for item in value]
        return value if all(map(operator.is_, items, value)) else items
    if not isinstance(value, dict) or not without:
        return value
    result = value
    if _has_hidden_key(value, without):
        result = {key: item for key, item in value.items() if key.lower() not in without}
    for key, item in result.items():
        if item and type(item) not in _SCALARS:  # an empty one has nothing to hide
            stripped = _redact_json(item, without)
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
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _convert(_dataclass_fields(value), depth + 1, without)
    for method in ("to_dict", "as_dict"):
        converter = getattr(value, method, None)
        if callable(converter):
            try:
                return _convert(converter(), depth + 1, without)
            except Exception as exc:  # a broken model must not break the request
                return _unserialisable(value, f"{method}() raised {exc!r}")
    return _unserialisable(value, "no JSON form")


def _dataclass_fields(value: Any) -> dict[str, Any]:
    # Not dataclasses.asdict(): it deep-copies, which fails on locks, files, sockets.
    return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}


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


def _last_resort(value: Any) -> str:
    return str(jsonable(value))
