"""``instrument demo``: a whole image lifecycle through the kit, over real HTTP.

It serves the example image API (``examples/image_api``) behind the middleware with
waitress on a free 127.0.0.1 port, drives it with an HTTP client (create, upload with
a progress bar, download, ranged download, aborted download, update, delete) and
prints every notification as it is delivered: from the logging strategy by default,
or read back from the broker with ``--strategy rabbit|qpid --url …``.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError, StrategyError
from ..middleware import NotificationMiddleware
from ..notifier import Notifier
from ..payloads import mask_credentials
from .display import Printer

__all__ = ["EXPECTED_EVENTS", "run_demo"]

#: What a demo run emits, in order.
EXPECTED_EVENTS = [
    ("image.create", "INFO"),
    ("image.prepare", "INFO"),
    ("image.upload", "INFO"),
    ("image.activate", "INFO"),
    ("image.send", "INFO"),
    ("image.send", "INFO"),
    ("image.send", "ERROR"),
    ("image.update", "INFO"),
    ("image.delete", "INFO"),
]
_CHUNK = 1024 * 1024
_RECEIVE_BUFFER = 64 * 1024  # the aborted download's client, as the README's benchmark


def load_image_api() -> Any:
    """The example image API class, from the source checkout this package lives in."""
    try:
        from examples.image_api import ImageAPI
    except ImportError:
        root = Path(__file__).resolve().parents[2]  # instrument/cli/demo.py -> the checkout
        if not (root / "examples" / "image_api").is_dir():
            raise SystemExit(
                "instrument demo needs the examples/ folder of a source checkout"
            ) from None
        sys.path.insert(0, str(root))
        from examples.image_api import ImageAPI
    return ImageAPI


class _LogFeed(logging.Handler):
    """Hands the logging strategy's JSON lines to the printer."""

    def __init__(self, printer: Printer, arrived: threading.Condition) -> None:
        super().__init__(logging.INFO)
        self.printer, self.arrived = printer, arrived

    def emit(self, record: logging.LogRecord) -> None:
        with self.arrived:
            self.printer.show(json.loads(record.getMessage()))
            self.arrived.notify_all()


def run_demo(
    *, strategy: str, url: str | None, as_json: bool, size_mib: int, stream: Any = None
) -> int:
    printer = Printer(stream, as_json=as_json)
    arrived = threading.Condition()
    options: dict[str, Any] = {"strategy": strategy, "publisher_id": "instrument-demo"}
    if url:
        options["transport_url"] = url
    stop = threading.Event()
    feed = _LogFeed(printer, arrived)
    logger = logging.getLogger("instrument.notifications")
    saved = (logger.level, logger.propagate)
    if strategy != "logging" and not url:
        raise SystemExit(
            f"--strategy {strategy} needs --url (e.g. amqp://guest:guest@127.0.0.1:5672//)"
        )
    try:
        notifier = Notifier.from_config(options)
    except ConfigError as exc:  # one line, as `check` says it
        raise SystemExit(f"instrument demo: {exc}") from None
    if strategy == "logging" or url is None:
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(feed)
    else:
        _check_broker(notifier)  # connects and declares the exchange the listener binds to
        _feed_from_broker(strategy, url, printer, arrived, stop)
    try:
        return _serve_and_drive(notifier, printer, arrived, size_mib)
    finally:
        stop.set()
        notifier.close()
        logger.removeHandler(feed)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _check_broker(notifier: Notifier) -> None:
    try:
        notifier.check(15)
    except StrategyError as exc:
        notifier.close()
        raise SystemExit(f"instrument demo: {exc}") from None


def _feed_from_broker(
    strategy: str,
    url: str,
    printer: Printer,
    arrived: threading.Condition,
    stop: threading.Event,
) -> None:
    from .listen import listen_amqp1, listen_kombu

    def show(notification: dict[str, Any]) -> None:
        with arrived:
            printer.show(notification)
            arrived.notify_all()

    ready = threading.Event()
    listen = listen_amqp1 if strategy == "qpid" else listen_kombu
    thread = threading.Thread(
        target=listen, args=(url, show), kwargs={"stop": stop, "ready": ready}, daemon=True
    )
    thread.start()
    if not ready.wait(15):
        raise SystemExit(f"cannot listen on {mask_credentials(url)}: the broker did not answer")


def _serve_and_drive(
    notifier: Notifier, printer: Printer, arrived: threading.Condition, size_mib: int
) -> int:
    from waitress.server import create_server

    data_dir = tempfile.mkdtemp(prefix="instrument-demo-")
    app = NotificationMiddleware(load_image_api()(data_dir), notifier)
    # The demo owns the server's socket map, so it can run the loop a step at a time.
    socket_map: dict[int, Any] = {}
    server: Any = create_server(
        app,
        map=socket_map,
        host="127.0.0.1",
        port=0,
        threads=4,
        max_request_body_size=size_mib * _CHUNK + 1,  # waitress refuses 1 GiB and more
    )
    stopping = threading.Event()
    thread = threading.Thread(target=_serve, args=(server, socket_map, stopping), daemon=True)
    thread.start()
    port = int(server.effective_port)
    _say(f"example image API with the instrument filter on http://127.0.0.1:{port}/ (waitress)")
    printer.header()
    try:
        _lifecycle(
            port,
            size_mib * _CHUNK,
            lambda count: _await(printer, arrived, count),
            lambda: printer.last.get("image.send"),
        )
        return _await_all(notifier, printer, arrived)
    finally:
        stopping.set()
        thread.join(timeout=5)
        shutil.rmtree(data_dir, ignore_errors=True)


def _serve(server: Any, socket_map: dict[int, Any], stopping: threading.Event) -> None:
    while not stopping.is_set():
        server.asyncore.loop(timeout=0.05, map=socket_map, count=1)
    server.close()
    server.task_dispatcher.shutdown()


def _await_all(notifier: Notifier, printer: Printer, arrived: threading.Condition) -> int:
    deadline = time.monotonic() + 10
    with arrived:
        arrived.wait_for(
            lambda: printer.count >= len(EXPECTED_EVENTS), max(0.0, deadline - time.monotonic())
        )
    notifier.flush(2)
    missing = len(EXPECTED_EVENTS) - printer.count
    _say(
        f"{printer.count} notifications delivered" + (f", {missing} missing" if missing > 0 else "")
    )
    return 0 if missing <= 0 else 1


def _await(printer: Printer, arrived: threading.Condition, count: int, timeout: float = 5) -> None:
    with arrived:
        arrived.wait_for(lambda: printer.count >= count, timeout)


def _lifecycle(
    port: int, size: int, settle: Callable[[int], None], last_send: Callable[[], Any]
) -> None:
    image = _request(
        port,
        "POST",
        "/v2/images",
        json.dumps(
            {"name": "demo-cirros", "disk_format": "raw", "container_format": "bare"}
        ).encode(),
        {"Content-Type": "application/json"},
    )
    image_id = json.loads(image)["id"]
    _upload(port, image_id, size)
    # A download is reported once the client acknowledged its last byte, or when the
    # server notices an abort: both may come after the next request has started. Wait
    # for each, so the events come in lifecycle order.
    _request(port, "GET", f"/v2/images/{image_id}/file", headers={"X-User-Id": "demo-user"})
    settle(5)
    _request(port, "GET", f"/v2/images/{image_id}/file", headers={"Range": "bytes=0-1048575"})
    settle(6)
    read, buffer = _aborted_download(port, f"/v2/images/{image_id}/file")
    settle(7)
    _compare(read, buffer, last_send())
    patch = json.dumps(
        [{"op": "replace", "path": "/name", "value": "demo-cirros-renamed"}]
    ).encode()
    _request(
        port,
        "PATCH",
        f"/v2/images/{image_id}",
        patch,
        {"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    _request(port, "DELETE", f"/v2/images/{image_id}")


def _upload(port: int, image_id: str, size: int) -> None:
    block = os.urandom(_CHUNK)

    def body() -> Iterator[bytes]:
        sent = 0
        while sent < size:
            chunk = block[: min(_CHUNK, size - sent)]
            sent += len(chunk)
            _progress("upload", sent, size)
            yield chunk
        sys.stderr.write("\n")

    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    _request(port, "PUT", f"/v2/images/{image_id}/file", body(), headers)


def _progress(label: str, done: int, total: int) -> None:
    if not sys.stderr.isatty() and done < total:
        return
    filled = int(30 * done / total)
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done * 100 // total:3d}%")
    sys.stderr.flush()


def _request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    _say(f"{method} {path} -> {response.status} {response.reason}")
    return data


def _aborted_download(port: int, path: str) -> tuple[int, int]:
    """Read the first MiB of a download's body, then reset the connection like a crashed
    client; (body bytes read, the client's receive buffer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
    buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # what the kernel gave
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    received = len(data.partition(b"\r\n\r\n")[2])
    while received < _CHUNK and (chunk := sock.recv(65536)):
        received += len(chunk)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    _say(f"GET {path} -> aborted by the client after {received:,} bytes of the body")
    return received, buffer


def _compare(read: int, buffer: int, payload: Any) -> None:
    """Say what the aborted download's client read next to its image.send's bytes_sent."""
    sent = payload.get("bytes_sent") if isinstance(payload, dict) else None
    if not isinstance(sent, int):
        _say("the aborted download's image.send did not arrive")
        return
    within = "within" if 0 <= sent - read <= buffer else "NOT within"
    _say(
        f"the client read {read:,} bytes of the body; image.send says bytes_sent={sent:,}: "
        f"{sent - read:+,}, {within} its {buffer:,}-byte receive buffer"
    )


def _say(line: str) -> None:
    sys.stderr.write(f"# {line}\n")
    sys.stderr.flush()
