"""Payload builders: image metadata, the image.send dict, and WARN/ERROR text.

Image metadata may carry store credentials in ``location``, ``locations`` and
``direct_url`` (a Swift or S3 URL with a key in it). Those keys are removed from
every payload, at any depth, whatever the configuration says; operators can name
more keys to remove with the ``redact`` option.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from .events import jsonable

__all__ = [
    "ALWAYS_REDACTED",
    "error_payload",
    "image_id_of",
    "image_payload",
    "mapping_of",
    "mask_credentials",
    "redacted",
    "send_payload",
]

# user:password@ in a URL of an exception text (a store or copy-from location).
# Up to the last @ of the URL: secrets may hold "/" or "@" (S3 keys do); masking too much
# is better than leaking.
_USERINFO: Final = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)\S*@")

#: Keys that never leave the process: they may hold store credentials.
ALWAYS_REDACTED: Final = frozenset({"location", "locations", "direct_url"})


def image_payload(image: Any, *, redact: Iterable[str] = ()) -> dict[str, Any]:
    """The INFO payload of create/prepare/upload/activate/update/delete: the image metadata.

    *image* may be a mapping, a dataclass, or an object with ``to_dict()`` or
    ``as_dict()``. The result is JSON-safe, with the credential-bearing keys and the
    keys named in *redact* removed (case-insensitively, in nested dicts too).
    """
    data = jsonable(_as_mapping(image))
    if not isinstance(data, dict):
        data = {"id": data}
    result: dict[str, Any] = redacted(data, redact)
    return result


def redacted(payload: Any, redact: Iterable[str] = ()) -> Any:
    """*payload* (already JSON-safe) without the credential keys and the keys in *redact*."""
    hidden = ALWAYS_REDACTED | {key.lower() for key in redact}
    return _without(payload, hidden)


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
        "image_id": image_id,
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
    *problem* (``swift://user:key@host``) are masked.
    """
    subject = f"image {image_id}" if image_id else "an unidentified image"
    return f"{event_type} failed for {subject}: {mask_credentials(problem)}"


def mask_credentials(text: str) -> str:
    """*text* with the ``user:password@`` of every URL in it replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text)


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
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
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


def _without(data: Any, hidden: frozenset[str] | set[str]) -> Any:
    if isinstance(data, dict):
        return {k: _without(v, hidden) for k, v in data.items() if k.lower() not in hidden}
    if isinstance(data, list):
        return [_without(item, hidden) for item in data]
    return data
