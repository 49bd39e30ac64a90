"""Real WSGI servers on 127.0.0.1 for tests: waitress in a thread, gunicorn in a subprocess."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def read_partially(port: int, target: str, stop_after: int, timeout: float = 60) -> int:
    """Read about *stop_after* bytes of a GET, then reset the connection like a crashed client.

    A small receive buffer keeps the server from pushing the whole body into the socket.
    """
    client = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    client.sendall(f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    received = 0
    while received < stop_after:
        data = client.recv(65536)
        if not data:
            break
        received += len(data)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    return received


def stop_process(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Terminate *process*, killing it if it does not end within *timeout* seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def waitress_server(app: Any, **adjustments: Any) -> Iterator[int]:
    """Serve *app* with waitress in a thread; yields the port.

    The loop runs in short slices so the server is closed by its own thread: closing it
    from another thread while it sits in select() fails with EBADF.
    """
    from waitress.server import create_server

    server: Any = create_server(app, host="127.0.0.1", port=0, threads=4, **adjustments)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)
        server.close()
        server.task_dispatcher.shutdown()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        wait_for_port(server.effective_port)
        yield int(server.effective_port)
    finally:
        stopping.set()
        thread.join(timeout=10)


@contextmanager
def gunicorn_server(app_spec: str, env: dict[str, str], *extra: str) -> Iterator[int]:
    """Serve ``module:callable`` with gunicorn (sync worker, sendfile on); yields the port."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--log-level",
        "warning",
        *extra,
        app_spec,
    ]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})
    try:
        wait_for_port(port)
        yield port
    finally:
        stop_process(process)


def _get(port: int, target: str, receive_buffer: int, timeout: float) -> tuple[socket.socket, int]:
    """Send ``GET target`` with a small receive buffer and read the response head.

    Returns the connection and how many body bytes came with the head.
    """
    client = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.sendall(f"GET {target} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            client.close()
            raise ConnectionError(f"no response head: {data!r}")
        data += chunk
    return client, len(data.split(b"\r\n\r\n", 1)[1])


def read_slowly_then_close(
    port: int,
    target: str,
    stop_after: int = 1024 * 1024,
    receive_buffer: int = 64 * 1024,
    pause: float = 0.01,
    timeout: float = 60,
) -> int:
    """A slow client: small receive buffer, *pause* between reads, gone after *stop_after*.

    Returns the body bytes it read (the response head is not counted). The close
    leaves unread data behind, so the kernel answers the server with a reset.
    """
    client, received = _get(port, target, receive_buffer, timeout)
    with client:
        while received < stop_after:
            time.sleep(pause)
            chunk = client.recv(65536)
            if not chunk:
                break
            received += len(chunk)
    return received


def read_stalled(
    port: int,
    target: str,
    first: int,
    stall: float,
    receive_buffer: int = 64 * 1024,
    timeout: float = 60,
) -> int:
    """A client that reads *first* body bytes, stops reading for *stall* seconds, then
    reads on until the server closes. Returns the body bytes it read in all."""
    client, received = _get(port, target, receive_buffer, timeout)
    with client:
        stalled = False
        while chunk := client.recv(65536):
            received += len(chunk)
            if received >= first and not stalled:
                stalled = True
                time.sleep(stall)
    return received
