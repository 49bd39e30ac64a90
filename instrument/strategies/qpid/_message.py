"""The AMQP 1.0 bare message of one notification, encoded directly (OASIS AMQP 1.0, part 3).

proton's ``Message.encode()`` rebuilds four ``Data`` wrappers and calls the C encoder
again with a buffer twice as large each time it is too small (16 bytes first): for a
notification that is six encodings. The qpid strategy always sends the same shape of
message, so it writes the three sections itself:

* ``header`` (0x70): ``durable = true``;
* ``properties`` (0x73): ``message-id`` (string), ``subject`` (the routing key),
  ``content-type`` (symbol ``application/json``), ``creation-time`` (timestamp, ms);
* one ``data`` section (0x75): the JSON envelope as binary, so AMQP 0-9-1 consumers of
  a RabbitMQ broker read plain JSON.

The bytes are the same as proton's for the same message (a test decodes them with
proton and compares them with ``Message.encode()``).
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["encode_message"]

# A section is a described list or binary: 0x00, the descriptor as smallulong (0x53).
_HEADER: Final = b"\x00\x53\x70\xc0\x02\x01\x41"  # list8 [durable = true]
_PROPERTIES: Final = b"\x00\x53\x73"
_DATA: Final = b"\x00\x53\x75"
_NULL: Final = b"\x40"
_CONTENT_TYPE: Final = b"\xa3\x10application/json"  # sym8
_TIMESTAMP: Final = struct.Struct(">Bq")  # 0x83, ms since the epoch
_LIST8: Final = struct.Struct(">BBB")  # 0xc0, size, count
_LIST32: Final = struct.Struct(">BII")  # 0xd0, size, count
_PROPERTY_COUNT: Final = 10  # message-id ... creation-time; the rest are left out


def encode_message(body: bytes, message_id: str, subject: str, creation_ms: int) -> bytes:
    """The encoded message: header, properties and *body* as one data section."""
    fields = b"".join(
        (
            _string(message_id),
            _NULL,  # user-id
            _NULL,  # to
            _string(subject),
            _NULL,  # reply-to
            _NULL,  # correlation-id
            _CONTENT_TYPE,
            _NULL,  # content-encoding
            _NULL,  # absolute-expiry-time
            _TIMESTAMP.pack(0x83, creation_ms),
        )
    )
    return b"".join((_HEADER, _PROPERTIES, _list(fields, _PROPERTY_COUNT), _DATA, _binary(body)))


def _string(text: str) -> bytes:
    return _sized(b"\xa1", b"\xb1", text.encode())  # str8-utf8, str32-utf8


def _binary(data: bytes) -> bytes:
    return _sized(b"\xa0", b"\xb0", data)  # vbin8, vbin32


def _sized(code8: bytes, code32: bytes, data: bytes) -> bytes:
    """*data* behind a one-byte length (below 256 bytes) or a four-byte one."""
    if len(data) < 256:
        return code8 + bytes((len(data),)) + data
    return code32 + len(data).to_bytes(4, "big") + data


def _list(fields: bytes, count: int) -> bytes:
    # The size counts the count field too: 1 byte in a list8, 4 in a list32.
    if len(fields) + 1 < 256:
        return _LIST8.pack(0xC0, len(fields) + 1, count) + fields
    return _LIST32.pack(0xD0, len(fields) + 4, count) + fields
