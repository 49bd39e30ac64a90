"""The image.send byte counter behind real servers (waitress, gunicorn sync and gthread),
and the zero-copy paths of gunicorn and uWSGI.

Each server runs in its own process, serving :func:`server_app` (this module) on
127.0.0.1; the app writes notifications as JSON lines (logging strategy, ``log_file``)
and one line per response saying what it returned. For gunicorn a config file wraps
``os.sendfile`` in the worker to log each call, which proves the zero-copy path; for
uWSGI the file body says how many bytes Python read from it (none: uWSGI sent it).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from instrument import Notifier
from instrument.sending import count_sent, expected_length

from . import apache
from .servers import free_port, read_partially, read_stalled, stop_process

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parent.parent
SIZE = 64 * 1024 * 1024
DEADLINE = 30.0

# The WSGI app the servers run --------------------------------------------------

_notifier: Notifier | None = None


def server_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """GET /gen or /file ?id=<image id>[&image=<file name>][&bare=1], optional ``Range``.

    The body is counted (unless ``bare``); its ``close()`` calls are written to the
    marks file.
    """
    global _notifier
    if _notifier is None:  # built in the worker, after any fork
        _notifier = Notifier.from_config(strategy="logging", log_file=os.environ["TEST_NOTIFY_LOG"])
    query = dict(parse_qsl(environ["QUERY_STRING"]))
    path = os.environ["TEST_IMAGE"]
    if "image" in query:
        path = os.path.join(os.path.dirname(path), os.path.basename(query["image"]))
    size = os.path.getsize(path)
    first, last = _requested_range(environ.get("HTTP_RANGE"), size)
    status = "206 Partial Content" if environ.get("HTTP_RANGE") else "200 OK"
    headers = [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(last - first + 1)),
    ]
    if status.startswith("206"):
        headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
    start_response(status, headers)
    body = _body(environ, path, first, last, query["id"])
    if "bare" in query:  # benchmarks/bench_accounting.py: the same body, not counted
        return body
    counted = count_sent(
        body,
        _notifier,
        image_id=query["id"],
        expected=expected_length(status, headers, size),
        environ=environ,
    )
    _mark(environ, counted)
    return counted


def _requested_range(header: str | None, size: int) -> tuple[int, int]:
    if not header:
        return 0, size - 1
    first, last = header.removeprefix("bytes=").split("-")
    return int(first), min(int(last), size - 1)


def _body(
    environ: dict[str, Any], path: str, first: int, last: int, image_id: str
) -> Iterable[bytes]:
    # eventlet.wsgi has no wsgi.file_wrapper: there /file is the generator too.
    if environ["PATH_INFO"] == "/file" and "wsgi.file_wrapper" in environ:
        recorded = _RecordedFile(path, image_id)  # closed by the server through close()
        recorded.seek(first)
        return environ["wsgi.file_wrapper"](recorded, 256 * 1024)  # type: ignore[no-any-return]
    file = open(path, "rb")  # noqa: SIM115 - closed by the generator
    file.seek(first)
    return _Generated(_generate(file, last - first + 1), image_id)


def _write_mark(line: dict[str, Any]) -> None:
    with open(os.environ["TEST_MARKS"], "a", encoding="utf-8") as marks:
        marks.write(json.dumps(line) + "\n")


class _RecordedFile(io.FileIO):
    """The image file; each ``close()`` while open is a mark (the file wrapper's close)
    saying how many bytes Python read from it (none: the server sent the file itself)."""

    def __init__(self, path: str, image_id: str) -> None:
        super().__init__(path, "rb")
        self.image_id = image_id
        self.bytes_read = 0

    def read(self, size: int = -1) -> Any:
        data = super().read(size)
        self.bytes_read += len(data or b"")
        return data

    def readinto(self, buffer: Any) -> Any:
        count = super().readinto(buffer)
        self.bytes_read += count or 0
        return count

    def close(self) -> None:
        if not self.closed:
            _write_mark({"closed": self.image_id, "read": self.bytes_read})
        super().close()


class _Generated:
    """A generator body whose every ``close()`` is a mark."""

    def __init__(self, chunks: Iterator[bytes], image_id: str) -> None:
        self.chunks = chunks
        self.image_id = image_id

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        _write_mark({"closed": self.image_id})
        self.chunks.close()


def _generate(file: Any, remaining: int) -> Iterator[bytes]:
    with file:
        while remaining > 0:
            chunk = file.read(min(remaining, 65536))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def _mark(environ: dict[str, Any], counted: Iterable[bytes]) -> None:
    wrapper = environ.get("wsgi.file_wrapper")
    _write_mark(
        {
            "id": dict(parse_qsl(environ["QUERY_STRING"]))["id"],
            "type": type(counted).__name__,
            "is_server_wrapper": None
            if wrapper is None  # eventlet.wsgi has none
            else isinstance(wrapper, type) and isinstance(counted, wrapper),
        }
    )


# Servers -----------------------------------------------------------------------

GUNICORN_CONF = """
import os

_sendfile = os.sendfile
_log = os.environ.get("TEST_SENDFILE_LOG")


def _logged_sendfile(*args, **kwargs):
    sent = _sendfile(*args, **kwargs)
    with open(_log, "a") as log:
        log.write(f"{sent}\\n")
    return sent


if _log:  # the benchmark runs without it
    os.sendfile = _logged_sendfile
"""

WAITRESS = (
    "import sys, waitress\n"
    "from tests.test_sending_servers import server_app\n"
    "server = waitress.create_server(server_app, host='127.0.0.1', port=0, threads=4)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(server.effective_port))\n"
    "import os; os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "server.run()\n"
)

EVENTLET = (
    "import os, sys, eventlet, eventlet.wsgi\n"
    "from tests.test_sending_servers import server_app\n"
    "sock = eventlet.listen(('127.0.0.1', 0))\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(sock.getsockname()[1]))\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "eventlet.wsgi.server(sock, server_app, log_output=False)\n"
)

UWSGI_APP = "tests.test_sending_servers:server_app"


class Server:
    """One server running :func:`server_app` in its own process, on a port it chose.

    Kinds: waitress, eventlet (``eventlet.wsgi``, not monkey-patched), gunicorn-sync,
    gunicorn-gthread, gunicorn-gevent, uwsgi (its own HTTP/1.1 socket), mod_wsgi
    (Debian's Apache and mod_wsgi, daemon mode: see :mod:`tests.apache`).
    """

    def __init__(self, kind: str, workdir: Path, image: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.notify_log = workdir / "notifications.jsonl"
        self.marks = workdir / "marks.jsonl"
        self.sendfile_log = workdir / "sendfile.log"
        self.env = dict(
            os.environ,
            TEST_IMAGE=str(image),
            TEST_NOTIFY_LOG=str(self.notify_log),
            TEST_MARKS=str(self.marks),
            TEST_SENDFILE_LOG=str(self.sendfile_log),
            PYTHONPATH=str(ROOT),
        )
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        output = open(self.workdir / "server.out", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT
        )
        output.close()
        self.port = self._wait_for_port()

    def command(self) -> list[str]:
        if self.kind in ("waitress", "eventlet"):
            script = WAITRESS if self.kind == "waitress" else EVENTLET
            return [sys.executable, "-W", "ignore", "-c", script, str(self.workdir / "port")]
        if self.kind == "uwsgi":
            return self._uwsgi()
        if self.kind == "mod_wsgi":
            return self._mod_wsgi()
        conf = self.workdir / "gunicorn_conf.py"
        conf.write_text(GUNICORN_CONF)
        worker = {
            "gunicorn-sync": ["-k", "sync"],
            "gunicorn-gthread": ["-k", "gthread", "--threads", "4"],
            "gunicorn-gevent": ["-k", "gevent"],
        }[self.kind]
        return [
            sys.executable, "-m", "gunicorn", "-c", str(conf), "-w", "1", *worker,
            "--bind", "127.0.0.1:0", "--error-logfile", str(self.workdir / "gunicorn.log"),
            "tests.test_sending_servers:server_app",
        ]  # fmt: skip

    def _uwsgi(self) -> list[str]:
        self.port = free_port()
        (self.workdir / "port").write_text(str(self.port))
        return [
            "uwsgi", "--http11-socket", f"127.0.0.1:{self.port}", "--wsgi", UWSGI_APP,
            "--processes", "1", "--threads", "4", "--need-app", "--disable-logging",
            "--chdir", str(ROOT), "--die-on-term",
        ]  # fmt: skip

    def _mod_wsgi(self) -> list[str]:
        # Apache's daemon runs as www-data: the workdir (image, logs) must be theirs too.
        self.port = free_port()
        env = {k: self.env[k] for k in ("TEST_IMAGE", "TEST_NOTIFY_LOG", "TEST_MARKS")}
        return apache.command(self.workdir, self.port, env)

    def _wait_for_port(self) -> int:
        return int(poll(self._port_if_known, f"{self.kind} to listen", self))

    def _port_if_known(self) -> str | None:
        if self.kind in ("waitress", "eventlet"):
            port_file = self.workdir / "port"
            return port_file.read_text() if port_file.exists() else None
        if self.kind in ("uwsgi", "mod_wsgi"):
            return str(self.port) if _listens(self.port) else None
        log = self.workdir / "gunicorn.log"
        for line in log.read_text().splitlines() if log.exists() else []:
            if "Listening at: http://127.0.0.1:" in line:
                return line.split("127.0.0.1:")[1].split()[0]
        return None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def output(self) -> str:
        files = ("server.out", "gunicorn.log", "apache/error.log")
        return "\n".join(
            (self.workdir / f).read_text(errors="replace")
            for f in files
            if (self.workdir / f).exists()
        )

    def send_event(self, image_id: str) -> dict[str, Any]:
        """The one image.send of *image_id*, waited for."""
        found = poll(
            lambda: _lines_for(self.notify_log, image_id), f"image.send of {image_id}", self
        )
        assert len(found) == 1, found
        return found[0]

    def mark(self, image_id: str) -> dict[str, Any]:
        [line] = [m for m in _read_jsonl(self.marks) if m.get("id") == image_id]
        return line

    def closes(self, image_id: str) -> int:
        """How many times the body of *image_id* was closed (waited for the first)."""
        poll(lambda: self._closes(image_id), f"close() of {image_id}", self)
        return self._closes(image_id)

    def _closes(self, image_id: str) -> int:
        return sum(1 for m in _read_jsonl(self.marks) if m.get("closed") == image_id)

    def read_by_python(self, image_id: str) -> int | None:
        """Bytes Python read from the file body of *image_id* (None: not a file body)."""
        self.closes(image_id)
        [read] = [m.get("read") for m in _read_jsonl(self.marks) if m.get("closed") == image_id]
        return None if read is None else int(read)

    def sendfile_calls(self) -> list[int]:
        if not self.sendfile_log.exists():
            return []
        return [int(line) for line in self.sendfile_log.read_text().split()]


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _lines_for(path: Path, image_id: str) -> list[dict[str, Any]] | None:
    found = [
        n
        for n in _read_jsonl(path)
        if n["event_type"] == "image.send" and n["payload"]["image_id"] == image_id
    ]
    return found or None


def poll(probe: Callable[[], Any], what: str, server: Server) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        if server.process is not None and server.process.poll() is not None:
            pytest.fail(f"{server.kind} exited while waiting for {what}:\n{server.output()}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}:\n{server.output()}")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "image.bin"
    block = bytes(range(256)) * 4096
    with open(path, "wb") as file:
        for _ in range(SIZE // len(block)):
            file.write(block)
    return path


@pytest.fixture(scope="module", params=["waitress", "gunicorn-sync", "gunicorn-gthread"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, image: Path
) -> Iterator[Server]:
    if request.param == "uwsgi" and shutil.which("uwsgi") is None:
        pytest.skip("uwsgi is not installed (scripts/install installs it)")
    running = Server(request.param, tmp_path_factory.mktemp(request.param), image)
    try:
        running.start()
        yield running
    finally:
        running.stop()


# Clients -----------------------------------------------------------------------


def download(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# Tests -------------------------------------------------------------------------

BODIES = ["/gen", "/file"]


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.mark.parametrize("body", BODIES)
def test_complete_download_is_info_with_the_full_size(
    server: Server, image: Path, body: str
) -> None:
    image_id = new_id()
    status, data = download(server.port, f"{body}?id={image_id}")
    assert status == 200
    assert len(data) == SIZE
    sent = server.send_event(image_id)
    assert (sent["priority"], sent["payload"]["bytes_sent"]) == ("INFO", SIZE)
    assert sent["payload"]["destination_ip"] == "127.0.0.1"


@pytest.mark.parametrize("body", BODIES)
def test_client_disconnect_midway_is_error_with_partial_count(server: Server, body: str) -> None:
    image_id = new_id()
    received = read_partially(server.port, f"{body}?id={image_id}", SIZE // 2)
    assert received >= SIZE // 2
    sent = server.send_event(image_id)
    assert sent["priority"] == "ERROR"
    assert SIZE // 2 - 4096 <= sent["payload"]["bytes_sent"] < SIZE


@pytest.mark.parametrize("body", BODIES)
def test_range_request_is_info_with_the_range_length(
    server: Server, image: Path, body: str
) -> None:
    image_id = new_id()
    first, last = 1000, 5 * 1024 * 1024 + 7
    status, data = download(
        server.port, f"{body}?id={image_id}", {"Range": f"bytes={first}-{last}"}
    )
    assert status == 206
    with open(image, "rb") as file:
        file.seek(first)
        assert data == file.read(last - first + 1)
    sent = server.send_event(image_id)
    assert (sent["priority"], sent["payload"]["bytes_sent"]) == ("INFO", last - first + 1)


def test_file_wrapper_keeps_the_servers_class(server: Server) -> None:
    image_id = new_id()
    download(server.port, f"/file?id={image_id}")
    server.send_event(image_id)
    assert server.mark(image_id)["is_server_wrapper"] is True


@pytest.mark.parametrize("server", ["gunicorn-sync", "gunicorn-gthread"], indirect=True)
def test_gunicorn_file_wrapper_goes_through_sendfile_and_is_counted(server: Server) -> None:
    # sendfile is gunicorn's zero-copy path; waitress has its own (tested above).
    before = len(server.sendfile_calls())
    image_id = new_id()
    status, data = download(server.port, f"/file?id={image_id}")
    sent = server.send_event(image_id)
    calls = server.sendfile_calls()[before:]
    assert status == 200 and len(data) == SIZE
    assert calls, "os.sendfile was not called"
    assert sum(calls) == SIZE == sent["payload"]["bytes_sent"]


@pytest.mark.parametrize("server", ["gunicorn-sync", "gunicorn-gthread"], indirect=True)
def test_generator_body_does_not_use_sendfile(server: Server) -> None:
    # sendfile is gunicorn's zero-copy path; waitress has its own (tested above).
    before = len(server.sendfile_calls())
    image_id = new_id()
    download(server.port, f"/gen?id={image_id}")
    server.send_event(image_id)
    assert server.sendfile_calls()[before:] == []
    assert server.mark(image_id)["type"] == "SendCounter"


@pytest.mark.parametrize("server", ["uwsgi"], indirect=True)
def test_uwsgi_sends_a_counted_file_itself(server: Server) -> None:
    # uWSGI's sendfile path sends the file from its descriptor: had uWSGI or the kit
    # iterated the body, Python would have read the file.
    image_id = new_id()
    status, data = download(server.port, f"/file?id={image_id}")
    sent = server.send_event(image_id)
    assert (status, len(data)) == (200, SIZE)
    assert (sent["priority"], sent["payload"]["bytes_sent"]) == ("INFO", SIZE)
    assert server.read_by_python(image_id) == 0
    assert server.closes(image_id) == 1


@pytest.mark.parametrize("server", ["uwsgi"], indirect=True)
def test_uwsgi_range_of_a_file_is_read_by_the_counter_only_as_far_as_the_range(
    server: Server, image: Path
) -> None:
    # uWSGI's sendfile would send the whole file from byte 0; the counter sends the range.
    image_id = new_id()
    first, last = 1000, 5 * 1024 * 1024 + 7
    status, data = download(server.port, f"/file?id={image_id}", {"Range": f"bytes={first}-{last}"})
    with open(image, "rb") as file:
        file.seek(first)
        assert (status, data) == (206, file.read(last - first + 1))
    sent = server.send_event(image_id)
    assert (sent["priority"], sent["payload"]["bytes_sent"]) == ("INFO", last - first + 1)
    assert server.read_by_python(image_id) == last - first + 1


@pytest.mark.parametrize("server", ["uwsgi"], indirect=True)
def test_uwsgi_giving_up_on_a_stalled_client_is_an_error_though_the_client_reads_all_it_got(
    server: Server,
) -> None:
    # After socket-timeout (4 s) without progress uWSGI stops sending and closes the
    # response just as after a complete one; the connection stays open and the client
    # then reads everything it was sent. Only the body's exact count tells them apart.
    image_id = new_id()
    read = read_stalled(server.port, f"/file?id={image_id}", 1024 * 1024, stall=6.0)
    sent = server.send_event(image_id)
    assert read < SIZE
    assert (sent["priority"], sent["payload"]["bytes_sent"]) == ("ERROR", read)
    assert server.read_by_python(image_id) == 0
