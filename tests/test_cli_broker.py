"""The command line against the real RabbitMQ node the suite starts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from instrument.cli import main

from .lifecycle import LIFECYCLE_EVENTS

if TYPE_CHECKING:
    from tests.support.rabbitmq import RabbitNode

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parent.parent


def start_listener(url: str, *extra: str) -> subprocess.Popen[str]:
    listener = subprocess.Popen(
        [sys.executable, "-m", "instrument.cli", "listen", "--url", url, "--json", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert listener.stderr is not None
    line = listener.stderr.readline()  # the listener says when its queue is bound
    assert line.startswith("# listening on"), line + listener.stderr.read()
    assert "guest:guest" not in line, "the password is masked"
    return listener


def run_demo(strategy: str, url: str) -> list[dict[str, object]]:
    """`instrument demo --json` through a broker; the notifications it printed."""
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "instrument.cli",
            "demo",
            "--strategy",
            strategy,
            "--url",
            url,
            "--json",
            "--size",
            "16",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    return [json.loads(line) for line in demo.stdout.splitlines()]


def events(notifications: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(n["event_type"], n["priority"]) for n in notifications]


def test_listen_shows_a_demo_run_through_rabbitmq(rabbit_node: RabbitNode) -> None:
    listener = start_listener(rabbit_node.url, "--count", "9", "--timeout", "90")
    shown = run_demo("rabbit", rabbit_node.url)
    out, _ = listener.communicate(timeout=60)
    heard = [json.loads(line) for line in out.splitlines()]
    assert events(heard) == events(shown)
    assert sorted(events(heard)) == sorted(LIFECYCLE_EVENTS)
    assert {n["message_id"] for n in heard} == {n["message_id"] for n in shown}


def test_listen_filters_by_event_type(rabbit_node: RabbitNode) -> None:
    listener = start_listener(
        rabbit_node.url, "--event", "image.send", "--count", "3", "--timeout", "90"
    )
    shown = run_demo("rabbit", rabbit_node.url)
    out, _ = listener.communicate(timeout=60)
    heard = [json.loads(line) for line in out.splitlines()]
    assert len(shown) == len(LIFECYCLE_EVENTS)
    assert events(heard) == [
        ("image.send", "INFO"),
        ("image.send", "INFO"),
        ("image.send", "ERROR"),
    ]


def test_check_delivers_through_rabbitmq(
    rabbit_node: RabbitNode, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-o", "strategy=rabbit", "-o", f"transport_url={rabbit_node.url}"]) == 0
    assert "OK: test notification" in capsys.readouterr().out


def test_check_against_a_stopped_broker(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.rabbitmq import free_port

    started = time.monotonic()
    code = main(
        [
            "check",
            "-o",
            "strategy=rabbit",
            "-o",
            f"rabbit_port={free_port()}",
            "-o",
            "rabbit_host=127.0.0.1",
            "--timeout",
            "5",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("FAILED: strategy 'rabbit'") and "connection refused" in err.lower()
    assert time.monotonic() - started < 20


def test_check_with_wrong_credentials(
    rabbit_node: RabbitNode, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "check",
            "-o",
            "strategy=rabbit",
            "-o",
            "rabbit_host=127.0.0.1",
            "-o",
            f"rabbit_port={rabbit_node.port}",
            "-o",
            "rabbit_password=not-the-password",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "authentication failed" in err.lower()
    assert "not-the-password" not in err


def test_demo_through_amqp_1_0(rabbit_node: RabbitNode) -> None:
    """`instrument demo --strategy qpid`: sent with proton, read back over AMQP 1.0."""
    shown = run_demo("qpid", f"amqp://guest:guest@127.0.0.1:{rabbit_node.port}")
    assert sorted(events(shown)) == sorted(LIFECYCLE_EVENTS)
    assert all(n["publisher_id"] == "instrument-demo" for n in shown)


def test_listen_skips_a_message_that_is_not_a_notification(rabbit_node: RabbitNode) -> None:
    """kombu decoded bodies before the listener saw them: a pickle or bad JSON on the
    exchange ended listening, and the notifications after it were never shown."""
    import kombu

    exchange = f"glance-{time.monotonic_ns()}"
    listener = start_listener(
        rabbit_node.url, "--exchange", exchange, "--count", "1", "--timeout", "60"
    )
    note = {"event_type": "image.update", "priority": "INFO", "payload": {"id": "i-1"}}
    with kombu.Connection(rabbit_node.url) as conn:
        producer = conn.Producer(exchange=kombu.Exchange(exchange, "topic", passive=True))
        key = "notifications.info"
        producer.publish(
            b"\x80\x04K\x01.",
            routing_key=key,
            content_type="application/x-python-serialize",
            content_encoding="binary",
        )
        producer.publish(
            b"{not json", routing_key=key, content_type="application/json", content_encoding="utf-8"
        )
        producer.publish(
            json.dumps(note),
            routing_key=key,
            content_type="application/json",
            content_encoding="utf-8",
        )
    out, err = listener.communicate(timeout=60)
    assert listener.returncode == 0, err
    assert [json.loads(line)["payload"] for line in out.splitlines()] == [{"id": "i-1"}]


def test_listen_over_amqp_1_0_reads_the_urls_virtual_host(rabbit_node: RabbitNode) -> None:
    """The qpid strategy publishes on the URL's virtual host: so must the listener."""
    from instrument import Notifier

    vhost = f"vh-{time.monotonic_ns()}"
    rabbit_node.ctl("add_vhost", vhost)
    rabbit_node.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        url = f"amqp://guest:guest@127.0.0.1:{rabbit_node.port}/{vhost}"
        with Notifier.from_config(strategy="qpid", qpid_transport_url=url) as notifier:
            notifier.strategies[0].check(10)  # declares the exchange in the virtual host
            listener = start_listener(url, "--amqp1", "--count", "1", "--timeout", "60")
            notifier.info("image.update", {"id": "i-1"})
            assert notifier.flush(20)
        out, err = listener.communicate(timeout=60)
        assert listener.returncode == 0, err
        assert [json.loads(line)["payload"] for line in out.splitlines()] == [{"id": "i-1"}]
    finally:
        rabbit_node.ctl("delete_vhost", vhost)
