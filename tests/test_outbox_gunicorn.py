"""gunicorn, 3 workers, one stuck mid-burst and killed by ``--timeout``: 0 lost.

Clients keep requests going to all workers (one notification each); one request emits
a burst of 2,000 and then freezes its worker (SIGSTOP: its delivery thread stops too,
so its journal still holds most of the burst). The arbiter's timeout kills it (SIGABRT
stays pending on a stopped process, then SIGKILL); the kernel drops its journal's
lock, and a sibling (or its replacement) adopts the journal and delivers it. Every
notification whose ``emit()`` returned (recorded in a side file after the return)
must reach a kombu consumer, against a real RabbitMQ node.
"""

from __future__ import annotations

import contextlib
import re
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.servers import gunicorn_server
from tests.support.consume import consume, ids

pytest.importorskip("kombu")
pytest.importorskip("gunicorn")

if TYPE_CHECKING:
    from tests.support.rabbitmq import RabbitNode

pytest_plugins = ["tests.support.rabbitmq_fixtures"]
pytestmark = pytest.mark.broker

BURST = 2000

_APP = """
    import logging, os, signal
    from instrument.events import Notification
    from instrument.strategies.rabbit import RabbitStrategy

    logging.basicConfig(level=logging.INFO, filename={log!r})
    strategy = RabbitStrategy(
        transport_url={url!r}, outbox_path={outbox!r}, **{names!r})
    side = os.open({side!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def app(environ, start_response):
        stuck = environ["PATH_INFO"] == "/stuck"
        for i in range({burst} if stuck else 1):
            note = Notification.create("image.send", "INFO", {{"pid": os.getpid(), "i": i}})
            strategy.emit(note)
            os.write(side, (note.message_id + "\\n").encode())
        if stuck:
            os.kill(os.getpid(), signal.SIGSTOP)  # frozen, delivery thread and all
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
"""


def _keep_requesting(port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()


def test_a_worker_killed_by_the_timeout_mid_burst_loses_nothing(
    rabbit_node: RabbitNode, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {"rabbit_notification_exchange": f"gu-{tag}", "rabbit_notification_topic": f"g-{tag}"}
    side, log = tmp_path / "side", tmp_path / "app.log"
    code = _APP.format(
        url=rabbit_node.url,
        outbox=str(tmp_path / "outbox"),
        names=names,
        side=str(side),
        burst=BURST,
        log=str(log),
    )
    (tmp_path / "stuck_app.py").write_text(textwrap.dedent(code))
    env = {"PYTHONPATH": f"{Path(__file__).resolve().parent.parent}:{tmp_path}"}
    stop = threading.Event()
    options = ("--workers", "3", "--timeout", "2", "--graceful-timeout", "1")
    errors = tmp_path / "gunicorn.log"
    with gunicorn_server("stuck_app:app", env, *options, "--error-logfile", str(errors)) as port:
        clients = [threading.Thread(target=_keep_requesting, args=(port, stop)) for _ in range(2)]
        for client in clients:
            client.start()
        time.sleep(0.5)
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/stuck", timeout=30).read()
        time.sleep(6)  # siblings look for adoptable journals every 5 s
        stop.set()
        for client in clients:
            client.join()
        time.sleep(1)
    returned = side.read_text().split()
    received = ids(
        consume(rabbit_node.url, names["rabbit_notification_topic"], expect=len(returned))
    )
    adopted = sum(int(n) for n in re.findall(r"adopted (\d+) notifications", log.read_text()))
    print(f"\ngunicorn: {len(returned)} returned, {len(received)} received, adopted {adopted}")
    assert "WORKER TIMEOUT" in errors.read_text()  # the arbiter killed it
    assert adopted > 0  # a sibling (or the replacement) took over the dead one's journal
    assert len(returned) > BURST
    assert not set(returned) - set(received), "lost"
