"""Decorators, capture() and the listener at their edges: what the handler sees and gets
back is what it would undecorated, whatever the kit's own inputs do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from instrument import Notifier
from instrument.cli.display import summary_of
from instrument.decorators import Instrumentation
from instrument.strategies.memory import MemoryStrategy
from instrument.testing import CapturedNotifications, capture


def _instrumented() -> tuple[MemoryStrategy, Instrumentation]:
    memory = MemoryStrategy()
    return memory, Instrumentation(Notifier(memory))


def test_an_async_generator_handler_gets_what_is_sent_thrown_and_closed() -> None:
    memory, on = _instrumented()
    closed: list[bool] = []

    @on.create
    async def handler() -> AsyncIterator[Any]:
        try:
            sent = yield 1
            try:
                yield sent
            except KeyError:
                yield "handled"
            yield "after"
        finally:
            closed.append(True)

    async def run() -> list[Any]:
        stream = handler()
        got = [await stream.__anext__(), await stream.asend(5)]
        got.append(await stream.athrow(KeyError("k")))
        await stream.aclose()
        return got

    assert asyncio.run(run()) == [1, 5, "handled"]
    assert closed == [True]
    assert memory.notifications == []  # closed early: neither done nor failed


class Repository:
    def rename(self, image_id: str, name: str) -> None:
        return None

    @classmethod
    def touch(cls, image_id: str) -> None:
        return None


@pytest.mark.parametrize("bound", [Repository().rename, Repository.touch])
def test_image_is_read_from_the_right_argument_of_a_bound_method(bound: Any) -> None:
    memory, on = _instrumented()
    on.update(image="image_id")(bound)("i1", *(["new-name"] if bound.__name__ == "rename" else []))
    assert memory.notifications[-1].payload == {"id": "i1"}


def test_an_enabled_callable_that_raises_leaves_the_handler_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory, on = _instrumented()

    def flag() -> bool:
        raise RuntimeError("the feature-flag store is down")

    @on.create(enabled=flag)
    def create() -> dict[str, str]:
        return {"id": "x"}

    assert create() == {"id": "x"}
    assert memory.notifications == [] and "enabled= callable failed" in caplog.text


def test_nested_captures_each_get_their_own_block(notifications: CapturedNotifications) -> None:
    notifier = Notifier(MemoryStrategy())
    with capture() as outer:
        with capture() as inner:
            pass
        notifier.info("image.create", {"id": "x"})
    notifier.info("image.update", {"id": "x"})
    assert (len(outer), len(inner)) == (1, 0)
    assert notifications.event_types == ["image.create", "image.update"]


@pytest.mark.parametrize("sent", [None, "12", 1.5, True])
def test_the_listener_shows_a_send_whose_count_is_not_an_integer(sent: Any) -> None:
    assert summary_of({"bytes_sent": sent, "destination_ip": "h"}) == f"bytes_sent={sent!r} to h"
