"""A TCP server on 127.0.0.1 that accepts connections and never answers (or trickles).

A "black-hole broker": the connection is made, nothing of the protocol ever comes
back. With ``trickle`` it sends one byte every ``trickle`` seconds instead, so that a
client bounding each read on its own (not the whole attempt) never times out.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["BlackHole", "serve"]


def serve(handle: Callable[[socket.socket], None]) -> socket.socket:
    """A server on a free port of 127.0.0.1 calling *handle* per client (thread) until closed."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)

    def accept() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed
                return
            handle(client)

    threading.Thread(target=accept, daemon=True).start()
    return server


class BlackHole:
    """Accept on a free port of 127.0.0.1; hold every connection open, silent."""

    def __init__(self, *, trickle: float | None = None) -> None:
        self.trickle = trickle
        self.accepted: list[socket.socket] = []
        self._closed = threading.Event()
        self.server = serve(self._hold)
        self.port: int = self.server.getsockname()[1]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _hold(self, client: socket.socket) -> None:
        self.accepted.append(client)
        if self.trickle is not None:
            threading.Thread(target=self._drip, args=(client,), daemon=True).start()

    def _drip(self, client: socket.socket) -> None:
        header = b"\x01\x00\x00\x00\x01\x00\x00"  # an AMQP method frame of 64 KiB ...
        with contextlib.suppress(OSError):
            for index in itertools.count():  # ... of which a byte comes now and then
                if self._closed.wait(self.trickle):
                    return
                client.sendall(header[index : index + 1] or b"\x00")

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        for client in self.accepted:
            with contextlib.suppress(OSError):
                client.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
