"""image.send through a real waitress where its own buffering could mislead the count.

waitress keeps what the application wrote below ``send_bytes`` in its buffers, and with
pipelined requests it queues the next response behind a file it is still sending. The
end of a response is therefore neither "everything the connection was given" nor
"everything the kernel took": these tests pin down each case with a client that resets.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from instrument import Notifier
from instrument._settling import settler
from instrument.sending import count_sent
from instrument.strategies.memory import MemoryStrategy
from tests.servers import waitress_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.servers

_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)  # Linux: acknowledge each read at once


def _reset(client: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): the client is gone, nothing more reaches it."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def _sends(memory: MemoryStrategy) -> list[tuple[str, int]]:
    wait_until(lambda: memory.notifications, 30)
    assert settler().settled(30)
    return [(n.priority, n.payload["bytes_sent"]) for n in memory.notifications]


def test_a_reset_before_the_tail_left_waitress_is_an_error_not_a_full_info() -> None:
    """The tail (below send_bytes) stays in waitress's buffer when the body ends: the
    client, reset by then, never gets it."""
    memory = MemoryStrategy()
    notifier = Notifier(memory)
    head, tail = b"a" * 50_000, b"z" * 10  # the head is flushed at once, the tail kept
    reset = threading.Event()

    def body() -> Iterator[bytes]:
        yield head
        assert reset.wait(30)
        yield tail

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        size = len(head) + len(tail)
        start_response("200 OK", [("Content-Length", str(size))])
        return count_sent(body(), notifier, image_id="img", expected=size, environ=environ)

    with waitress_server(app) as port:
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.recv(65536)
        _reset(client)
        reset.set()
        ((priority, sent),) = _sends(memory)
    assert priority == "ERROR" and sent <= len(head)


def test_a_pipelined_response_behind_a_file_does_not_blur_it(tmp_path: Path) -> None:
    """A file body larger than the kernel's send buffer, the next pipelined response
    queued behind it by waitress, a client that reads all the file and resets."""
    memory = MemoryStrategy()
    notifier = Notifier(memory)
    size, second = 32 * 1024 * 1024, 8 * 1024 * 1024
    image = tmp_path / "image"
    image.write_bytes(os.urandom(size))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/file":
            start_response("200 OK", [("Content-Length", str(size))])
            body = environ["wsgi.file_wrapper"](image.open("rb"))
            return count_sent(body, notifier, image_id="file", expected=size, environ=environ)
        start_response("200 OK", [("Content-Length", str(second))])
        return [b"s" * second]

    with waitress_server(app) as port:
        client = socket.create_connection(("127.0.0.1", port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sendall(
            b"GET /file HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += client.recv(65536)
        got = len(data.split(b"\r\n\r\n", 1)[1])
        while got < size:  # slower than the loopback: waitress queues /next meanwhile
            time.sleep(0.001)
            got += len(client.recv(min(65536, size - got)))
            client.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        time.sleep(0.3)  # the last acknowledgement leaves (sent at once: QUICKACK)
        _reset(client)  # all of /file read, none of /next
        sends = _sends(memory)
    assert sends == [("INFO", size)]
