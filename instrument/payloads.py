"""What a payload may contain: the builders, JSON-safe conversion and the only redaction.

Builders: image metadata (:func:`image_payload`), the image.send dict
(:func:`send_payload`) and the WARN/ERROR text (:func:`error_payload`).

Image metadata may carry store credentials in ``location``, ``locations`` and
``direct_url`` (a Swift or S3 URL with a key in it). Those keys are removed from
every payload, at any depth, whatever the configuration says; operators can name
more keys to remove with the ``redact`` option (:func:`hidden_keys`). Removal happens
in the same pass that makes a payload JSON-safe (:func:`jsonable`), which the Notifier
runs on every payload when it builds the notification; credentials inside URLs of a
text are masked by :func:`mask_credentials`.
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
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

__all__ = [
    "ALWAYS_REDACTED",
    "CUT_MARKER",
    "MAX_ID_CHARS",
    "MAX_TEXT_CHARS",
    "JSONSafe",
    "bounded",
    "error_payload",
    "finite_floats",
    "hidden_keys",
    "image_id_of",
    "image_payload",
    "jsonable",
    "mapping_of",
    "mask_credentials",
    "masked_strings",
    "redacted",
    "send_payload",
]

log = logging.getLogger("instrument.payloads")

# user:password@ in a URL of an exception text (a store or copy-from location).
# Up to the last @ of the URL: secrets may hold "/" or "@" (S3 keys do); masking too much
# is better than leaking.
_USERINFO: Final = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)\S*@")

#: Keys that never leave the process: they may hold store credentials.
ALWAYS_REDACTED: Final = frozenset({"location", "locations", "direct_url"})

#: The longest image id, and the longest WARN/ERROR text, a payload carries; longer
#: ones are cut and end in "…" (a path segment can be any length; a payload cannot).
MAX_ID_CHARS: Final = 255
MAX_TEXT_CHARS: Final = 1024

# An absolute file path of the server in an exception text ("File name too long:
# '/var/lib/glance/images/…'"): the server's layout is none of the consumers' business.
# Not a URL's path (preceded by a host name or "//") and at least two segments long.
_SERVER_PATH: Final = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"]+/)+[^\s'\"]*")


def image_payload(image: Any, *, redact: Iterable[str] = ()) -> dict[str, Any]:
    """The INFO payload of create/prepare/upload/activate/update/delete: the image metadata.

    *image* may be a mapping, a dataclass, or an object with ``to_dict()`` or
    ``as_dict()``. The result is JSON-safe, with the credential-bearing keys and the
    keys named in *redact* removed (case-insensitively, in nested dicts too).
    """
    data = _convert(_as_mapping(image), 0, hidden_keys(redact))
    return data if isinstance(data, dict) else {"id": data}


def hidden_keys(redact: Iterable[str] = ()) -> frozenset[str]:
    """The keys a payload never carries: the credential keys and those in *redact*."""
    return ALWAYS_REDACTED | {key.lower() for key in redact}


def redacted(payload: Any, redact: Iterable[str] = ()) -> Any:
    """*payload*, JSON-safe, without the credential keys and the keys in *redact*."""
    return _convert(payload, 0, hidden_keys(redact))


def send_payload(
    *,
    image_id: str | None,
    owner_id: str | None,
    receiver_tenant_id: str | None,
    receiver_user_id: str | None,
    destination_ip: str | None,
    bytes_sent: int,
) -> dict[str, Any]:
    """The image.send payload; the same dict is sent at INFO and at ERROR."""
    return {
        "image_id": bounded(image_id, MAX_ID_CHARS),
        "owner_id": owner_id,
        "receiver_tenant_id": receiver_tenant_id,
        "receiver_user_id": receiver_user_id,
        "destination_ip": destination_ip,
        "bytes_sent": bytes_sent,
    }


def error_payload(event_type: str, image_id: str | None, problem: str) -> str:
    """The text payload of a WARN or ERROR event.

    It names the event, the image and what went wrong, e.g.
    ``"image.upload failed for image 5e1a…: 409 Conflict"``. Credentials in URLs of
    *problem* (``swift://user:key@host``) are masked, the server's file paths are
    replaced by ``<path>``, and the id and the text are bounded (:data:`MAX_ID_CHARS`,
    :data:`MAX_TEXT_CHARS`).
    """
    subject = f"image {bounded(image_id, MAX_ID_CHARS)}" if image_id else "an unidentified image"
    text = _SERVER_PATH.sub("<path>", mask_credentials(problem))
    return f"{event_type} failed for {subject}: {bounded(text, MAX_TEXT_CHARS)}"


def mask_credentials(text: str) -> str:
    """*text* with the ``user:password@`` of every URL in it replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text) if "://" in text else text


def bounded(text: str | None, limit: int) -> str | None:
    """*text* cut to *limit* characters, ending in "…" when cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def masked_strings(value: Any) -> Any:
    """JSON data with :func:`mask_credentials` applied to every string in it (a copy)."""
    if isinstance(value, str):
        return mask_credentials(value)
    if isinstance(value, list):
        return [masked_strings(item) for item in value]
    if isinstance(value, dict):
        return type(value)((key, masked_strings(item)) for key, item in value.items())
    return value


def image_id_of(image: Any) -> str | None:
    """The ``id`` of an image given in any form :func:`image_payload` accepts, or a bare id."""
    if isinstance(image, (str, bytes)) or image is None:
        return image.decode() if isinstance(image, bytes) else image
    try:
        value = _as_mapping(image).get("id")
    except Exception:
        return None
    return None if value is None else str(value)


def mapping_of(value: Any) -> Mapping[str, Any] | None:
    """*value* as a mapping: a mapping, a dataclass, ``to_dict()``/``as_dict()``; else None."""
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dataclass_fields(value)
    for method in ("to_dict", "as_dict"):
        converter = getattr(value, method, None)
        if callable(converter):
            result = converter()
            return result if isinstance(result, Mapping) else None
    return None


def _as_mapping(image: Any) -> Mapping[str, Any]:
    mapping = mapping_of(image)
    if mapping is not None:
        return mapping
    if isinstance(image, str):
        return {"id": image}
    raise TypeError(f"cannot read image metadata from {type(image).__qualname__}")


def _dataclass_fields(value: Any) -> dict[str, Any]:
    # Not dataclasses.asdict(): it deep-copies, which fails on locks, files, sockets.
    return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}


# JSON-safe conversion, with redaction in the same pass: the Notifier runs it on every
# payload (Notification.create), so it is the kit's one place where keys are removed.


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
    except (_TooDeep, RecursionError):  # an object whose to_dict() nests on and on
        return CUT_MARKER
    if isinstance(result, dict):
        result["truncated"] = True
    return result


def _pruned(value: Any, depth: int) -> Any:
    if depth >= _MAX_DEPTH:
        return CUT_MARKER if isinstance(value, (Mapping, list, tuple, set, frozenset)) else value
    if isinstance(value, Mapping):
        return {key: _pruned(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_pruned(item, depth + 1) for item in value]
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
