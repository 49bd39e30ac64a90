"""AMQP 0-9-1 frames of a batch: encoded by pamqp, written under the connection's write lock.

Decisions:

* **Encoded by a maintained library.** :func:`publish_frames` asks pamqp (the encoder
  aiormq uses) for the method, content-header and body frames of one
  ``basic.publish``; the kit assembles no frame itself. A test pins these bytes to
  py-amqp's own frame writer (``basic_publish``'s encoding).
* **One write per batch, under the lock every writer takes.** py-amqp writes each
  message with its own syscall, which capped a batch at py-amqp's speed. The batch's
  frames are joined and written by :meth:`FrameWriter.write`. :class:`FrameWriter` is
  the connection's frame writer, installed through ``amqp.Connection``'s public
  ``frame_writer`` argument (kombu passes ``transport_options`` to it): it wraps
  py-amqp's own :func:`amqp.method_framing.frame_writer` and holds one lock around
  every frame py-amqp writes (declarations, heartbeats, ``basic_publish``, close) and
  around our batch writes, so no two writes ever interleave on the socket. A batch is
  written by the publisher's ``send`` (:mod:`._alarm`: in pieces, reading the
  broker's frames while it waits), under that lock; a frame py-amqp would write in
  answer meanwhile (only a close-ok can be) fails instead of landing inside ours.
* **A content header per message id length, not per message.** pamqp takes 4 us to
  encode one content header, most of a message's cost in the worker. Only two of its
  fields change from one message to the next, the body size (eight bytes at a fixed
  offset) and the message id (the last property, just before the frame end), so pamqp
  encodes one header per (channel, delivery mode, id length) and each message's header
  is that one with its own size and id put in (:func:`_content_header`). A header
  whose layout is not the expected one is encoded in full, as before.
* **pamqp is stricter than RabbitMQ**: it refuses exchange names outside its grammar
  (letters, digits, ``-_.:@#,/+`` and space, at most 127 characters), which RabbitMQ
  and py-amqp accept. :func:`refusal` says so at connect, and the publisher then keeps
  using ``basic_publish`` for that target, as before.
"""

from __future__ import annotations

import functools
import importlib
import struct
import threading
from collections.abc import Callable
from typing import Any, Final

__all__ = ["FrameWriter", "publish_frames", "refusal"]

# pamqp's and py-amqp's annotations are partial; used as untyped libraries.
_commands: Any = importlib.import_module("pamqp.commands")
_frame: Any = importlib.import_module("pamqp.frame")
_header: Any = importlib.import_module("pamqp.header")
_body: Any = importlib.import_module("pamqp.body")
_method_framing: Any = importlib.import_module("amqp.method_framing")

_CONTENT_TYPE: Final = "application/json"
_CONTENT_ENCODING: Final = "utf-8"
_FRAME_OVERHEAD: Final = 8  # type, channel, size, frame-end
_FRAME_END: Final = b"\xce"
_BODY_SIZE: Final = struct.Struct(">Q")
_BODY_SIZE_AT: Final = 11  # frame header (7 bytes), class id (2), weight (2)


class FrameWriter:
    """py-amqp's frame writer for one connection, behind a lock batch writes take too."""

    def __init__(self, connection: Any, transport: Any) -> None:
        self.lock = threading.Lock()  # made at connect: picks up gevent/eventlet patching
        self._connection = connection
        self._transport = transport
        self._write_frame = _method_framing.frame_writer(connection, transport)
        self._batch_thread: int | None = None  # the thread inside write(), if any

    def __call__(self, *frame: Any) -> Any:
        """What py-amqp calls to write one frame (method, content, heartbeat)."""
        if self._batch_thread == threading.get_ident():
            # Only a close-ok answers a frame read in the middle of a batch: the broker
            # is closing the connection, and a frame of ours is half written.
            raise ConnectionError("the broker closed the connection while a batch was written")
        with self.lock:
            return self._write_frame(*frame)

    def write(self, frames: bytes, send: Callable[[Any, bytes], None] | None = None) -> None:
        """Write already-encoded frames; no other frame can come between.

        *send* (``send(transport, frames)``) writes them, and may read the broker's
        frames while it waits (see :mod:`._alarm`); by default the transport's write.
        """
        with self.lock:
            self._batch_thread = threading.get_ident()
            try:
                if send is None:
                    self._transport.write(frames)
                else:
                    self._written_by(send, frames)
            finally:
                self._batch_thread = None
            self._connection.bytes_sent += 1  # heartbeat_check() must see that we talked

    def _written_by(self, send: Callable[[Any, bytes], None], frames: bytes) -> None:
        try:
            send(self._transport, frames)
        except OSError:  # as py-amqp's own write: a broken socket ends the connection
            self._transport.connected = False
            raise


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    message_id: str,
    delivery_mode: int,
    frame_max: int,
) -> bytes:
    """The frames of one ``basic.publish`` (AMQP 0-9-1, 4.2.3 and 4.2.6), by pamqp.

    Method (exchange, routing key, mandatory, not immediate), content header with
    content type, content encoding, delivery mode and message id, then the body cut
    into frames of at most *frame_max* bytes each.
    """
    header = _content_header(channel, delivery_mode, message_id, len(body))
    parts = [_method_frame(channel, exchange, routing_key), header]
    chunk = frame_max - _FRAME_OVERHEAD if frame_max else len(body) or 1
    parts += [
        _frame.marshal(_body.ContentBody(body[i : i + chunk]), channel)
        for i in range(0, len(body), chunk)
    ]
    return b"".join(parts)


def _content_header(channel: int, delivery_mode: int, message_id: str, body_size: int) -> bytes:
    """The content header frame of one message: pamqp's template with its size and id."""
    identifier = message_id.encode()
    template = _header_template(channel, delivery_mode, len(identifier))
    if template is None:
        return _encoded_header(channel, delivery_mode, message_id, body_size)
    head, middle = template
    return b"".join((head, _BODY_SIZE.pack(body_size), middle, identifier, _FRAME_END))


@functools.lru_cache(maxsize=64)
def _header_template(
    channel: int, delivery_mode: int, id_length: int
) -> tuple[bytes, bytes] | None:
    """pamqp's header for a body of 0 bytes and a placeholder id of *id_length* bytes,
    cut around the body size and the id; None when the layout is not the expected one
    (the id not last, an id too long for pamqp)."""
    placeholder = "x" * id_length
    try:
        encoded = _encoded_header(channel, delivery_mode, placeholder, 0)
    except (TypeError, ValueError):  # the full encoding raises it again, as it always did
        return None
    tail = placeholder.encode() + _FRAME_END
    size_field = encoded[_BODY_SIZE_AT : _BODY_SIZE_AT + _BODY_SIZE.size]
    if not encoded.endswith(tail) or size_field != _BODY_SIZE.pack(0):
        return None
    return encoded[:_BODY_SIZE_AT], encoded[_BODY_SIZE_AT + _BODY_SIZE.size : -len(tail)]


def _encoded_header(channel: int, delivery_mode: int, message_id: str, body_size: int) -> bytes:
    """The content header frame, every byte by pamqp."""
    properties = _commands.Basic.Properties(
        content_type=_CONTENT_TYPE,
        content_encoding=_CONTENT_ENCODING,
        delivery_mode=delivery_mode,
        message_id=message_id,
    )
    return bytes(_frame.marshal(_header.ContentHeader(0, body_size, properties), channel))


def refusal(exchange: str, routing_key: str) -> str:
    """Why pamqp cannot encode a publish to *exchange* with *routing_key*; empty if it can."""
    try:
        _method_frame(1, exchange, routing_key)
    except ValueError as exc:
        return f"an exchange name pamqp accepts ({exchange!r}: {exc})"
    return ""


@functools.lru_cache(maxsize=64)
def _method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    """The ``basic.publish`` method frame; the same for every message with that routing key.

    Mandatory: a message no queue takes is returned, not dropped (see :mod:`._confirms`).
    """
    method = _commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True)
    return bytes(_frame.marshal(method, channel))
