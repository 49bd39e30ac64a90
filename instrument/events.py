"""Event types, priorities and the notification envelope.

The envelope has exactly the fields of the specification, in Glance's wire format:
``message_id`` (a uuid4 string), ``publisher_id``, ``event_type``, ``priority``,
``timestamp`` (UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``) and ``payload``.

Payloads are made JSON-safe and redacted when the notification is built (see
:func:`instrument._jsonsafe.jsonable`), so every strategy serialises the same value and a
caller mutating its dict after the call cannot change what is delivered.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from ._jsonsafe import finite_floats, jsonable

_fast_dumps: Callable[[Any], bytes] | None
try:  # instrument[speedups]: writes the envelope ten times faster than json
    from orjson import dumps as _fast_dumps
except ImportError:  # pragma: no cover - depends on the installed extras
    _fast_dumps = None

__all__ = [
    "ERROR",
    "EVENT_TYPES",
    "IMAGE_ACTIVATE",
    "IMAGE_CREATE",
    "IMAGE_DELETE",
    "IMAGE_MEMBER_CREATE",
    "IMAGE_MEMBER_DELETE",
    "IMAGE_MEMBER_UPDATE",
    "IMAGE_PREPARE",
    "IMAGE_SEND",
    "IMAGE_UPDATE",
    "IMAGE_UPLOAD",
    "INFO",
    "MAX_NOTIFICATION_BYTES",
    "MEMBER_EVENT_TYPES",
    "PRIORITIES",
    "WARN",
    "Notification",
    "default_publisher_id",
    "new_message_id",
]

IMAGE_CREATE: Final = "image.create"
IMAGE_PREPARE: Final = "image.prepare"
IMAGE_UPLOAD: Final = "image.upload"
IMAGE_ACTIVATE: Final = "image.activate"
IMAGE_SEND: Final = "image.send"
IMAGE_UPDATE: Final = "image.update"
IMAGE_DELETE: Final = "image.delete"
IMAGE_MEMBER_CREATE: Final = "image.member.create"
IMAGE_MEMBER_UPDATE: Final = "image.member.update"
IMAGE_MEMBER_DELETE: Final = "image.member.delete"

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

#: Image sharing, as Glance emits it (not in the specification): a member added, its
#: status changed (accepted, rejected, pending), removed.
MEMBER_EVENT_TYPES: Final = (IMAGE_MEMBER_CREATE, IMAGE_MEMBER_UPDATE, IMAGE_MEMBER_DELETE)

INFO: Final = "INFO"
WARN: Final = "WARN"
ERROR: Final = "ERROR"

#: The priorities of the specification. Glance spells the middle one ``WARN``.
PRIORITIES: Final = (INFO, WARN, ERROR)

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
            jsonable(payload, without),
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
        """The envelope as a JSON document; never raises.

        Always valid JSON that encodes to UTF-8, at most :data:`MAX_NOTIFICATION_BYTES`:
        a non-finite number becomes its name (``"inf"``), a lone surrogate U+FFFD, and
        a payload that would make the document larger is shrunk (long strings cut,
        long lists shortened) and marked ``"truncated": true``.
        """
        fast = self._fast_json()
        return fast.decode() if fast is not None else self._checked_json()

    def to_bytes(self) -> bytes:
        """:meth:`to_json` encoded as UTF-8: the message body every strategy sends."""
        fast = self._fast_json()
        return fast if fast is not None else self._checked_json().encode()

    def _fast_json(self) -> bytes | None:
        """The document by orjson (ten times :mod:`json`'s speed, on the request path
        and in the delivery worker), or None for what it refuses (a lone surrogate, an
        integer beyond 64 bits, a key that is not a string) or a document over the
        limit: those go the checked way. :meth:`create` has made every float finite
        already, and so has :func:`~instrument.images.parse_json` (orjson would write a
        non-finite one as ``null``)."""
        if _fast_dumps is None:
            return None
        try:
            body = _fast_dumps(self.to_dict())
        except TypeError:  # orjson.JSONEncodeError
            return None
        return body if len(body) <= MAX_NOTIFICATION_BYTES else None

    def _checked_json(self) -> str:
        envelope = self.to_dict()
        text = _dumps(envelope)
        if len(text) > MAX_NOTIFICATION_BYTES // 4 and _size(text) > MAX_NOTIFICATION_BYTES:
            text = _fitted(envelope)
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        """Rebuild a notification from its wire form (what a consumer reads)."""
        return cls(
            data["message_id"],
            data["publisher_id"],
            data["event_type"],
            data["priority"],
            data["timestamp"],
            data["payload"],
        )


#: The largest notification the kit puts on the wire, in UTF-8 bytes.
MAX_NOTIFICATION_BYTES: Final = 64 * 1024
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# Shrinking steps for an oversized payload: (longest string, longest list) per attempt.
_SHRINK_STEPS: Final = ((4096, 1000), (1024, 100), (256, 20), (64, 5))


def _dumps(document: Any) -> str:
    try:
        text = json.dumps(document, default=jsonable, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a float beyond range ("1e400" parsed as inf): its name instead
        text = json.dumps(finite_floats(document), default=jsonable, ensure_ascii=False)
    # A lone surrogate (a "\ud800" escape in a request the application accepted) cannot
    # be encoded: it would poison every strategy that sends the text.
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _fitted(envelope: dict[str, Any]) -> str:
    """The envelope with its payload shrunk until the document fits."""
    payload = envelope["payload"]
    for longest_string, longest_list in _SHRINK_STEPS:
        shrunk = _shrunk(payload, longest_string, longest_list)
        if isinstance(shrunk, dict):
            shrunk["truncated"] = True
        text = _dumps({**envelope, "payload": shrunk})
        if _size(text) <= MAX_NOTIFICATION_BYTES:
            return text
    kept = (
        {key: payload.get(key) for key in ("id", "image_id")} if isinstance(payload, dict) else {}
    )
    return _dumps({**envelope, "payload": {**_shrunk(kept, 255, 1), "truncated": True}})


def _shrunk(value: Any, longest_string: int, longest_list: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= longest_string else value[: longest_string - 1] + "…"
    if isinstance(value, list):
        return [_shrunk(item, longest_string, longest_list) for item in value[:longest_list]]
    if isinstance(value, dict):
        return {
            key[:longest_string]: _shrunk(item, longest_string, longest_list)
            for key, item in list(value.items())[:longest_list]
        }
    return value


def default_publisher_id() -> str:
    """The host name, as the specification says."""
    return socket.gethostname()
