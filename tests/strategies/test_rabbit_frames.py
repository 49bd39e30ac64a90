"""The rabbit strategy's batch frames: pamqp's bytes are py-amqp's bytes, written under one lock."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

amqp = pytest.importorskip("amqp")
pytest.importorskip("pamqp")

from amqp import spec  # noqa: E402
from amqp.method_framing import frame_writer  # noqa: E402
from amqp.serialization import dumps  # noqa: E402

from instrument.strategies.rabbit._frames import (  # noqa: E402
    FrameWriter,
    publish_frames,
    refusal,
)


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))


class _Connection:
    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self.bytes_sent = 0


def py_amqp_frames(
    channel: int, exchange: str, key: str, body: bytes, message_id: str, mode: int, frame_max: int
) -> bytes:
    """What py-amqp's own frame writer sends for ``basic_publish`` of the same message."""
    transport = _Transport()
    write = frame_writer(_Connection(frame_max), transport)
    message = amqp.Message(
        body,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=mode,
        message_id=message_id,
    )
    args = dumps("Bssbb", (0, exchange, key, True, False))  # mandatory, not immediate
    write(1, channel, spec.Basic.Publish, args, message)
    return b"".join(transport.written)


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
_exchanges = st.from_regex(r"[a-zA-Z0-9_.:@#,/+ -]{0,127}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    channel=st.integers(1, 2047),
    exchange=_exchanges,
    key=_names,
    body=st.binary(max_size=10_000),
    message_id=_names.filter(bool),  # a notification's message_id is a UUID, never empty
    mode=st.sampled_from([1, 2]),
    frame_max=st.sampled_from([4096, 8192, 131072]),
)
def test_publish_frames_are_the_bytes_py_amqp_writes(
    channel: int, exchange: str, key: str, body: bytes, message_id: str, mode: int, frame_max: int
) -> None:
    ours = publish_frames(channel, exchange, key, body, message_id, mode, frame_max)
    assert ours == py_amqp_frames(channel, exchange, key, body, message_id, mode, frame_max)


def test_a_header_reused_for_another_message_gets_that_message_s_size_and_id() -> None:
    # The same channel, mode and id length: the second and third reuse the first's header.
    for message_id, body in (("a" * 36, b""), ("b" * 36, b"x" * 70_000), ("é" * 18, b"{}")):
        ours = publish_frames(3, "glance", "notifications.info", body, message_id, 2, 131072)
        theirs = py_amqp_frames(3, "glance", "notifications.info", body, message_id, 2, 131072)
        assert ours == theirs


def test_a_message_id_too_long_for_amqp_is_refused_as_pamqp_refuses_it() -> None:
    with pytest.raises(TypeError, match="255"):
        publish_frames(1, "glance", "notifications.info", b"{}", "x" * 256, 2, 131072)


def test_batch_writes_and_py_amqp_frames_never_interleave() -> None:
    transport = _Transport()
    connection = _Connection(131072)
    writer = FrameWriter(connection, transport)
    held = threading.Event()
    release = threading.Event()
    original = transport.write

    def slow_write(data: Any) -> None:
        held.set()
        release.wait(5)
        original(data)

    transport.write = slow_write  # type: ignore[method-assign]
    batch = threading.Thread(target=writer.write, args=(b"batch",))
    batch.start()
    assert held.wait(5)
    heartbeat = threading.Thread(target=writer, args=(8, 0, None, None, None))
    heartbeat.start()
    heartbeat.join(0.2)
    assert heartbeat.is_alive()  # py-amqp's heartbeat waits for the batch write
    release.set()
    batch.join(5)
    heartbeat.join(5)
    assert transport.written[0] == b"batch" and transport.written[1][:1] == b"\x08"
    assert connection.bytes_sent == 2


def test_exchange_names_pamqp_refuses_are_said_so_that_basic_publish_is_used() -> None:
    assert refusal("glance", "notifications.info") == ""
    assert "pamqp" in refusal("glance;odd", "notifications.info")
