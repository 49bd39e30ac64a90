"""What a payload may contain: the builders, and which keys are never sent.

Builders: image metadata (:func:`image_payload`), the image.send dict
(:func:`send_payload`) and the WARN/ERROR text (:func:`error_payload`). The JSON-safe
conversion they and the Notifier use is :mod:`instrument._jsonsafe`'s; ``jsonable``,
``JSONSafe``, ``CUT_MARKER``, ``finite_floats``, ``mask_credentials`` and
``masked_strings`` are re-exported here.

Image metadata may carry store credentials in ``location``, ``locations`` and
``direct_url`` (a Swift or S3 URL with a key in it). Those keys are removed from
every payload, at any depth, whatever the configuration says; operators can name
more keys to remove with the ``redact`` option (:func:`hidden_keys`). Removal happens
in the same pass that makes a payload JSON-safe (:func:`jsonable`), which the Notifier
runs on every payload when it builds the notification; credentials inside URLs of a
text are masked by :func:`mask_credentials`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ._jsonsafe import (
    CUT_MARKER,
    JSONSafe,
    finite_floats,
    jsonable,
    mask_credentials,
    masked_strings,
    model_fields,
)

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
    data = jsonable(_as_mapping(image), hidden_keys(redact))
    return data if isinstance(data, dict) else {"id": data}


def hidden_keys(redact: Iterable[str] = ()) -> frozenset[str]:
    """The keys a payload never carries: the credential keys and those in *redact*."""
    return ALWAYS_REDACTED | {key.lower() for key in redact}


def redacted(payload: Any, redact: Iterable[str] = ()) -> Any:
    """*payload*, JSON-safe, without the credential keys and the keys in *redact*."""
    return jsonable(payload, hidden_keys(redact))


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


def bounded(text: str | None, limit: int) -> str | None:
    """*text* cut to *limit* characters, ending in "…" when cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


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
    fields = model_fields(value)
    return fields if isinstance(fields, Mapping) else None


def _as_mapping(image: Any) -> Mapping[str, Any]:
    mapping = mapping_of(image)
    if mapping is not None:
        return mapping
    if isinstance(image, str):
        return {"id": image}
    raise TypeError(f"cannot read image metadata from {type(image).__qualname__}")
