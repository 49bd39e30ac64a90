"""Reading image metadata from image API responses, in Glance's notification shape.

Consumers of Glance's notifications (Ceilometer, billing, auditing) expect the
payload shape of Glance's own notifier, not the REST representation: core fields
at the top, extra properties under ``properties``, ``is_public`` next to
``visibility``, ``deleted``/``deleted_at``. :func:`notification_image` turns a v2
JSON image or a v1 image (body or ``x-image-meta-*`` headers) into that shape.
REST-only keys (``self``, ``file``, ``schema``) are dropped; credential-bearing keys
are removed later by the payload builders.
"""

from __future__ import annotations

import datetime as _dt
import json
import json.scanner
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from ._jsonsafe import JSONSafe, finite_floats, mask_credentials, masked_strings
from .payloads import ALWAYS_REDACTED

_fast_loads: Callable[[bytes], Any] | None
try:  # instrument[speedups]: parses a response body several times faster than json
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the installed extras
    _fast_loads = None

__all__ = [
    "CORE_FIELDS",
    "UPLOADABLE_STATUSES",
    "can_take_data",
    "deleted_image",
    "image_from_body",
    "image_from_headers",
    "member_from_body",
    "member_payload",
    "notification_image",
    "parse_json",
    "prepared_image",
]

#: Fields Glance's notifier puts at the top of an image payload.
CORE_FIELDS: Final = frozenset(
    {
        "id",
        "name",
        "status",
        "created_at",
        "updated_at",
        "min_disk",
        "min_ram",
        "protected",
        "checksum",
        "owner",
        "disk_format",
        "container_format",
        "size",
        "virtual_size",
        "visibility",
        "is_public",
        "tags",
        "deleted",
        "deleted_at",
        "os_hidden",
        "os_hash_algo",
        "os_hash_value",
    }
)
#: Statuses in which an image accepts data. An upload in another status fails before
#: the store is touched, so image.prepare is not emitted for it (Glance does the same).
UPLOADABLE_STATUSES: Final = frozenset({"queued", "saving", "uploading", "importing"})
# "stores" is computed by Glance's multi-store API; its notifier never sends it.
_REST_ONLY: Final = frozenset({"self", "file", "schema", "stores"})
# Not moved under "properties": the REST-only keys, and the credential keys (which the
# Notifier would remove anyway; not copying them is cheaper).
_NOT_PROPERTIES: Final = _REST_ONLY | ALWAYS_REDACTED | {"properties"}
_V1_INTEGERS: Final = frozenset({"size", "min_disk", "min_ram", "virtual_size"})
_V1_BOOLEANS: Final = frozenset({"is_public", "protected", "deleted"})
_HEADER_PREFIX: Final = "x-image-meta-"


def notification_image(image: Mapping[str, Any], *, from_json: bool = False) -> dict[str, Any]:
    """*image* (v1 or v2 REST form) in Glance's notification shape.

    With *from_json* (the image was parsed from JSON or headers) the result is marked
    :class:`~instrument._jsonsafe.JSONSafe`, so the Notifier need not convert it.
    """
    # Copy everything, then move out the few keys that are not core fields: cheaper
    # than building the result key by key (this runs for every lifecycle request).
    result: dict[str, Any] = JSONSafe(image) if from_json else dict(image)
    nested = image.get("properties")
    # v1 nests the extra properties in a mapping; in v2, a "properties" key is itself an
    # extra property (Glance accepts any name it does not reserve).
    properties: dict[str, Any] = dict(nested) if isinstance(nested, Mapping) else {}
    if nested is not None and not isinstance(nested, Mapping):
        properties["properties"] = nested
    for key in [key for key in result if key not in CORE_FIELDS]:
        value = result.pop(key)
        if key not in _NOT_PROPERTIES:
            properties[key] = value
    if "visibility" in result:
        # v2 has no is_public attribute: Glance computes it from the visibility, and an
        # "is_public" key in the image (a string, as every v2 extra property) is an extra
        # property like any other.
        if not isinstance(result.get("is_public", False), bool):
            properties["is_public"] = result.pop("is_public")
        result["is_public"] = result["visibility"] == "public"
    result["properties"] = properties
    if "is_public" in result and "visibility" not in result:
        result["visibility"] = "public" if result["is_public"] else "private"
    result.setdefault("deleted", False)
    result.setdefault("deleted_at", None)
    return result


def deleted_image(image: Mapping[str, Any]) -> dict[str, Any]:
    """*image* as Glance's image.delete payload shows it: deleted now."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _changed(image, status="deleted", deleted=True, deleted_at=now)


def _changed(image: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """*image* with *fields* (JSON values) set; JSON-safe still if *image* was, so that
    the Notifier does not convert it key by key again."""
    changed = {**image, **fields}
    return JSONSafe(changed) if isinstance(image, JSONSafe) else changed


#: The fields of Glance's image.member.* payloads (its format_image_member_notification).
MEMBER_FIELDS: Final = ("image_id", "member_id", "status", "created_at", "updated_at")


def member_from_body(body: bytes) -> dict[str, Any] | None:
    """The image member in a v2 member JSON body, in Glance's payload shape, else None.

    Only Glance's fields are kept (the REST ``schema`` link goes); ``deleted`` is false
    and ``deleted_at`` null, as Glance sends them for create and update.
    """
    try:
        document = parse_json(body) if body.lstrip()[:1] == b"{" else None
    except ValueError:
        return None
    return JSONSafe(member) if (member := member_payload(document)) is not None else None


def member_payload(member: Any) -> dict[str, Any] | None:
    """A member record (a mapping with a string ``member_id``) in Glance's payload shape.

    Only Glance's fields are kept; ``deleted`` is false and ``deleted_at`` null, as
    Glance sends them for create and update. None for anything else.
    """
    if not (isinstance(member, Mapping) and isinstance(member.get("member_id"), str)):
        return None
    return {**{key: member.get(key) for key in MEMBER_FIELDS}, "deleted": False, "deleted_at": None}


def deleted_member(member: Mapping[str, Any]) -> dict[str, Any]:
    """*member* as Glance's image.member.delete payload shows it: deleted now."""
    return {**deleted_image(member), "status": member.get("status")}


def can_take_data(image: Mapping[str, Any]) -> bool:
    """Whether *image*'s status lets it take data (no image without one is queued)."""
    return image.get("status", "queued") in UPLOADABLE_STATUSES


def prepared_image(image: Mapping[str, Any]) -> dict[str, Any] | None:
    """The image.prepare payload for *image*, or None when it cannot take data.

    Glance moves a queued image to ``saving`` before it emits image.prepare, so a
    queued image is reported as saving.
    """
    if not can_take_data(image):
        return None
    status = image.get("status", "queued")
    return _changed(image, status="saving") if status == "queued" else _changed(image)


def image_from_body(body: bytes) -> dict[str, Any] | None:
    """The image in a v2 JSON body or a v1 ``{"image": {...}}`` body, else None."""
    if not body or body.lstrip()[:1] != b"{":
        return None
    try:
        document = parse_json(body)
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("image"), dict):
        document = document["image"]
    if not (isinstance(document, dict) and isinstance(document.get("id"), str)):
        return None
    # bytes.find, not `in`: a bytes `in` first tries its operand as an integer (see below).
    if body.find(b"://") >= 0 and body.find(b"@") >= 0:  # a URL with userinfo, maybe
        document = masked_strings(document)
    return notification_image(document, from_json=True)


def parse_json(body: bytes) -> Any:
    """``json.loads(body)``, faster; ValueError if *body* is not JSON.

    With orjson installed (``instrument[speedups]``) it parses. orjson is stricter
    than :mod:`json` (it refuses ``NaN``, lone surrogates, byte-order marks) and reads
    integers beyond 64 bits as floats, so what it refuses goes on to :mod:`json`, and
    a body with a run of 19 or more digits (where such an integer could hide) goes to
    :mod:`json` directly. Without orjson, a UTF-8 object with no leading whitespace is
    handed straight to json's C scanner, skipping ``json.loads``'s encoding detection;
    anything else goes through ``json.loads``. Either way the result is what
    ``json.loads(body)`` gives, keys in the same order, with two exceptions: the
    non-finite numbers ``NaN``, ``Infinity`` and ``-Infinity`` (which JSON does not
    have, though :mod:`json` reads them) become the strings ``"nan"``, ``"inf"`` and
    ``"-inf"``, as do numbers beyond a float's range (``1e400``), so no notification
    carries them; and orjson parses documents nested
    about 1,000 to 1,024 levels deep, where ``json.loads`` runs out of recursion.
    """
    shape = body.translate(_DIGITS_AS_ZERO)
    document = _parsed(body, fast=shape.find(_LONG_DIGIT_RUN) < 0)
    # A number beyond a float's range (a 309-digit one, 1e400) reads as infinity
    # whichever parser read it; such numbers are rare and easy to see coming.
    return finite_floats(document) if _may_overflow(shape) else document


def _parsed(body: bytes, *, fast: bool) -> Any:
    if fast and _fast_loads is not None:
        try:
            return _fast_loads(body)
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            pass
    if body[:1] == b"{":
        try:
            text = body.decode("utf-8")
            document, end = _scan_once(text, 0)
        except (ValueError, StopIteration):
            pass  # json.loads below raises the error json users know
        else:
            if end == len(text) or not text[end:].strip(_JSON_WHITESPACE):
                return document
    return json.loads(body, parse_constant=_non_finite)


def _may_overflow(shape: bytes) -> bool:
    """Whether a body (its digits made zeros) may hold a number beyond a float's range:
    a run of 19 digits, or a number with an exponent of three digits (looked for only
    when the cheap search finds one, such as ``e000`` in an id's hex digits)."""
    if shape.find(_LONG_DIGIT_RUN) >= 0:
        return True
    if shape.find(b"e000") < 0 and shape.find(b"E000") < 0 and shape.find(b"+000") < 0:
        return False
    return _LONG_EXPONENT.search(shape) is not None


# Every integer outside orjson's 64-bit range has at least 19 digits. (bytes.find, not
# ``in``: CPython first tries a bytes ``in`` operand as an integer and builds a TypeError
# to throw away, which costs more than the search on a request path.)
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN: Final = b"0" * 19
# A number (where a value starts) with an exponent of three digits or more: the only
# other way to write one past 1.8e308.
_LONG_EXPONENT: Final = re.compile(rb"[:\[,]\s*-?0+(?:\.0+)?[eE]\+?000")


# json.loads's own decoder settings; the C scanner it uses, without its Python wrapping.
# Non-finite numbers (NaN, Infinity: json accepts them, JSON does not) become their
# name, as the Notifier makes Python's own non-finite floats: "nan", "inf", "-inf".
def _non_finite(name: str) -> str:
    return str(float(name))


_scan_once: Final = json.scanner.make_scanner(
    json.JSONDecoder(parse_constant=_non_finite)  # type: ignore[arg-type]
)
_JSON_WHITESPACE: Final = " \t\n\r"


def image_from_headers(headers: Iterable[tuple[str, str]]) -> dict[str, Any] | None:
    """The image described by v1 ``x-image-meta-*`` response headers, else None."""
    image: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for name, value in headers:
        lowered = name.lower()
        if not lowered.startswith(_HEADER_PREFIX):
            continue
        key = lowered[len(_HEADER_PREFIX) :]
        if key.startswith("property-"):
            properties[key[len("property-") :]] = mask_credentials(value)
        else:
            key = key.replace(
                "-", "_"
            )  # WSGI servers turn x-image-meta-disk_format into -disk-format
            image[key] = _v1_value(key, mask_credentials(value))
    if "id" not in image:
        return None
    image["properties"] = properties
    return notification_image(image, from_json=True)


def _v1_value(key: str, value: str) -> Any:
    if key in _V1_INTEGERS:
        try:
            return int(value)
        except ValueError:
            return None if value in ("", "None") else value
    if key in _V1_BOOLEANS:
        return value.strip().lower() == "true"
    return None if value == "None" else value
