"""Count an image download yourself with ``count_sent``, without the middleware.

Run: python examples/iterators.py

A WSGI app wraps the body it returns; image.send is emitted exactly once, when the
body is exhausted (INFO: every promised byte went out) or closed early (ERROR: the
client went away), with the bytes actually handed to the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

from instrument import Notifier, count_sent
from instrument.strategies.memory import MemoryStrategy

IMAGE = b"\x00" * 1_000_000

memory = MemoryStrategy()
notifier = Notifier(memory, publisher_id="iterators-example")


def image_chunks() -> Iterator[bytes]:
    for start in range(0, len(IMAGE), 65536):
        yield IMAGE[start : start + 65536]


def download(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", str(len(IMAGE)))])
    return count_sent(
        image_chunks(),
        notifier,
        image_id="cirros-1",
        owner_id="tenant-a",
        expected=len(IMAGE),
        environ=environ,
    )


def fetch(read_all: bool) -> None:
    environ: dict[str, Any] = {"REMOTE_ADDR": "198.51.100.7", "HTTP_X_USER_ID": "alice"}
    setup_testing_defaults(environ)
    body = download(environ, lambda status, headers: None)
    for index, _chunk in enumerate(body):
        if not read_all and index == 3:  # the client hangs up after four chunks
            break
    body.close()  # type: ignore[attr-defined]  # the server always calls close()


fetch(read_all=True)
fetch(read_all=False)
for note in memory.notifications:
    print(note.priority, note.event_type, note.payload)
