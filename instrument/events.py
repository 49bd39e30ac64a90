"""Event types, priorities and the notification envelope.

The envelope has exactly the fields of the specification, in Glance's wire format:
``message_id`` (a uuid4 string), ``publisher_id``, ``event_type``, ``priority``,
``timestamp`` (UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``) and ``payload``.

Payloads are made JSON-safe and redacted when the notification is built (see
:func:`instrument.payloads.jsonable`), so every strategy serialises the same value and a
caller mutating its dict after the call cannot change what is delivered.
"""

from __future__ import annotations

import dataclasses
import json
import random
import socket
import time
from collections.abc import Mapping
from typing import Any, Final

from .payloads import jsonable

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
        """The envelope as a JSON document (never raises: the payload is already JSON-safe)."""
        return json.dumps(self.to_dict(), default=jsonable, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        """Rebuild a notification from its wire form (what a consumer reads)."""
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})


def default_publisher_id() -> str:
    """The host name, as the specification says."""
    return socket.gethostname()
