"""The request body that says when the application first reads it."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

from instrument._first_read import FirstRead

READS: list[tuple[str, Callable[[Any], Any]]] = [
    ("read", lambda body: body.read()),
    ("read(n)", lambda body: body.read(2)),
    ("readline", lambda body: body.readline()),
    ("readlines", lambda body: body.readlines()),
    ("readinto", lambda body: body.readinto(bytearray(3))),
    ("iteration", lambda body: list(body)),
    ("next", lambda body: next(body)),
]


@pytest.mark.parametrize(("name", "read"), READS, ids=[name for name, _ in READS])
def test_every_way_of_reading_calls_the_hook_once_before_the_data(
    name: str, read: Callable[[Any], Any]
) -> None:
    stream = io.BytesIO(b"ab\ncd\n")
    positions: list[int] = []
    body = FirstRead.wrap(stream, lambda: positions.append(stream.tell()))
    read(body)
    read(body)
    assert positions == [0], "once, before any byte was read"


def test_the_body_is_still_the_servers_object() -> None:
    stream = io.BytesIO(b"data")
    body = FirstRead.wrap(stream, lambda: None)
    assert isinstance(body, io.BytesIO) and body.getvalue() == b"data"


def test_a_failing_hook_is_logged_and_the_read_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    def failing() -> None:
        raise RuntimeError("notifier gone")

    body = FirstRead.wrap(io.BytesIO(b"data"), failing)
    assert body.read() == b"data"
    assert "first read" in caplog.text and "notifier gone" in caplog.text


def test_nothing_read_means_no_call() -> None:
    calls: list[int] = []
    body = FirstRead.wrap(io.BytesIO(b"data"), lambda: calls.append(1))
    assert body.seekable() and calls == []


def test_a_read_of_nothing_is_not_the_first_read() -> None:
    calls: list[int] = []
    body = FirstRead.wrap(io.BytesIO(b"data"), lambda: calls.append(1))
    assert body.read(0) == b"" and body.readline(0) == b""
    assert body.readinto(bytearray()) == 0
    assert calls == []
    assert body.read(2) == b"da" and calls == [1]


def test_readinto_is_there_only_when_the_stream_has_it() -> None:
    class Plain:
        def read(self, size: int = -1) -> bytes:
            return b""

    assert not hasattr(FirstRead.wrap(Plain(), lambda: None), "readinto")
    assert hasattr(FirstRead.wrap(io.BytesIO(), lambda: None), "readinto")
