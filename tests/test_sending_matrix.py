"""image.send behind every server operators use: what ``bytes_sent`` says reached the client.

For every server, body kind (generator, ``wsgi.file_wrapper``) and image size (8 MiB, 64 MiB):
a full download is one INFO with every byte; a slow client that reads 1 MiB and closes
is one ERROR with ``bytes_sent`` at least what it read (never INFO); two downloads on one
keep-alive connection are counted separately and exactly; a Range download is judged by
its range; the body is closed exactly once. Each server starts once for the module, on
127.0.0.1 and a port it chose; nothing here measures time.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import apache
from .servers import read_slowly_then_close
from .test_sending_servers import Server, _lines_for

pytestmark = pytest.mark.servers

MiB = 1024 * 1024
SIZES = {"8MiB": 8 * MiB, "64MiB": 64 * MiB}
BODIES = ["/gen", "/file"]
SERVERS = [
    "waitress",
    "eventlet",
    "gunicorn-sync",
    "gunicorn-gthread",
    "gunicorn-gevent",
    "uwsgi",
    "mod_wsgi",
]
TIMEOUT = 60.0
#: Where the kit cannot reach the connection: bytes_sent is what was handed to the server.
HANDED_TO_SERVER = {"mod_wsgi"}


def _unavailable(kind: str) -> str | None:
    """Why *kind* cannot run here, or None."""
    if kind == "uwsgi" and shutil.which("uwsgi") is None:
        return "uwsgi is not installed (scripts/install installs it)"
    if kind == "mod_wsgi":
        return apache.unavailable()
    return None


@pytest.fixture(scope="module")
def images() -> Iterator[Path]:
    """A directory every server's user can read and write (Apache's daemon is www-data)."""
    root = Path(tempfile.mkdtemp(prefix="instrument-matrix-"))
    root.chmod(0o777)
    block = bytes(range(256)) * 4096
    for name, size in SIZES.items():
        with open(root / f"image-{name}.bin", "wb") as file:
            for _ in range(size // len(block)):
                file.write(block)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=SERVERS)
def server(request: pytest.FixtureRequest, images: Path) -> Iterator[Server]:
    kind = request.param
    reason = _unavailable(kind)
    if reason is not None:
        pytest.skip(reason)
    workdir = images / kind
    workdir.mkdir()
    workdir.chmod(0o777)
    running = Server(kind, workdir, images / "image-8MiB.bin")
    try:
        running.start()
        yield running
    finally:
        running.stop()


def target(body: str, size: str, image_id: str) -> str:
    return f"{body}?id={image_id}&image=image-{size}.bin"


def new_id() -> str:
    return str(uuid.uuid4())


def assert_closed_once(server: Server, image_id: str) -> None:
    assert server.closes(image_id) == 1


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("body", BODIES)
def test_full_download_is_one_info_with_every_byte(server: Server, body: str, size: str) -> None:
    image_id = new_id()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        connection.request("GET", target(body, size, image_id))
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    assert (response.status, len(data)) == (200, SIZES[size])
    sent = server.send_event(image_id)
    assert (sent["priority"], sent["payload"]["bytes_sent"]) == ("INFO", SIZES[size])
    assert_closed_once(server, image_id)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("body", BODIES)
def test_slow_client_that_gives_up_is_one_error_with_at_least_what_it_read(
    server: Server, body: str, size: str
) -> None:
    image_id = new_id()
    read = read_slowly_then_close(server.port, target(body, size, image_id), MiB)
    assert read >= MiB
    sent = server.send_event(image_id)
    assert sent["priority"] == "ERROR"
    assert read <= sent["payload"]["bytes_sent"] < SIZES[size]
    assert_closed_once(server, image_id)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("body", BODIES)
def test_two_downloads_on_one_keep_alive_connection_are_counted_apart(
    server: Server, body: str, size: str
) -> None:
    if server.kind == "gunicorn-sync":
        pytest.skip("gunicorn's sync worker closes every connection after one response")
    ids = [new_id(), new_id()]
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        for image_id in ids:
            connection.request("GET", target(body, size, image_id))
            response = connection.getresponse()
            assert (response.status, len(response.read())) == (200, SIZES[size])
            assert not response.will_close, "the server closed the keep-alive connection"
    finally:
        connection.close()
    for image_id in ids:
        sent = server.send_event(image_id)
        assert (sent["priority"], sent["payload"]["bytes_sent"]) == ("INFO", SIZES[size])
        assert_closed_once(server, image_id)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("body", BODIES)
def test_range_download_is_judged_by_its_range(
    server: Server, images: Path, body: str, size: str
) -> None:
    image_id = new_id()
    first, last = 1000, 5 * MiB + 7
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        connection.request(
            "GET", target(body, size, image_id), headers={"Range": f"bytes={first}-{last}"}
        )
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    assert response.status == 206
    with open(images / f"image-{size}.bin", "rb") as file:
        file.seek(first)
        assert data == file.read(last - first + 1)
    sent = server.send_event(image_id)
    assert (sent["priority"], sent["payload"]["bytes_sent"]) == ("INFO", last - first + 1)
    assert_closed_once(server, image_id)


def test_a_client_that_has_not_read_the_tail_holds_no_worker(server: Server) -> None:
    # The whole 1 MiB fits in the kernel's buffers, so the server finishes the response
    # at once; the client's TCP acknowledges only what fits its 64 KiB receive buffer.
    # A second download, on a one-worker sync server too, is counted while the first
    # still waits for its client, whose image.send comes when it read everything.
    waiting, quick = new_id(), new_id()
    client = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        request = f"GET {target('/gen', '8MiB', waiting)} HTTP/1.1\r\nHost: test\r\n"
        client.sendall(f"{request}Range: bytes=0-{MiB - 1}\r\n\r\n".encode())
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            connection.request("GET", target("/gen", "8MiB", quick), headers={"Range": "bytes=0-9"})
            assert connection.getresponse().read() == bytes(range(10))
        finally:
            connection.close()
        assert server.send_event(quick)["priority"] == "INFO"
        if server.kind not in HANDED_TO_SERVER:  # there, the report comes at once
            assert _lines_for(server.notify_log, waiting) is None
        received = b""
        while received.count(b"\r\n\r\n") == 0 or len(received.partition(b"\r\n\r\n")[2]) < MiB:
            received += client.recv(65536)
    finally:
        client.close()
    sent = server.send_event(waiting)
    assert (sent["priority"], sent["payload"]["bytes_sent"]) == ("INFO", MiB)
