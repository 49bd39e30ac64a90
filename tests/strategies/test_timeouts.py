"""Timeouts that mean what they say (issue 15), against black-hole brokers.

A black hole accepts TCP and never answers (:mod:`tests.support.blackhole`).
``*_connect_timeout`` bounds the whole attempt to one host (within a second),
``close_timeout`` bounds ``close()``, failover reaches the next host within the bound,
and ``instrument check --timeout 5`` returns within 6 s. The bounds are the issue's own
or generous liveness bounds, never tight timing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from instrument.events import Notification
from instrument.exceptions import StrategyError
from instrument.strategies.base import Strategy
from instrument.strategies.qpid import QpidStrategy
from instrument.strategies.rabbit import RabbitStrategy
from tests.support.blackhole import BlackHole

pytest.importorskip("kombu")
pytest.importorskip("proton")

if TYPE_CHECKING:
    from tests.support.rabbitmq import RabbitNode

ROOT = Path(__file__).resolve().parents[2]
CONNECT = 2.0  # seconds per attempt in these tests


def rabbit(*urls: str, **options: Any) -> RabbitStrategy:
    return RabbitStrategy(transport_url=";".join(urls), rabbit_connect_timeout=CONNECT, **options)


def qpid(*ports: int, **options: Any) -> QpidStrategy:
    urls = ";".join(f"amqp://127.0.0.1:{port}" for port in ports)
    return QpidStrategy(qpid_transport_url=urls, qpid_connect_timeout=CONNECT, **options)


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def connect_fails(strategy: Strategy) -> None:
    publisher = strategy.publisher(strategy.target)  # type: ignore[attr-defined]
    try:
        with pytest.raises(StrategyError, match="timed out"):
            publisher.connect()
    finally:
        publisher.close()


def test_rabbit_attempt_to_a_black_hole_is_bounded_by_the_connect_timeout() -> None:
    with BlackHole() as hole, rabbit(hole.url) as strategy:
        assert timed(lambda: connect_fails(strategy)) < CONNECT + 1


def test_rabbit_attempt_to_a_trickling_broker_is_bounded_as_a_whole() -> None:
    """A byte now and then keeps every single read alive; the attempt still ends."""
    with BlackHole(trickle=0.2) as hole, rabbit(hole.url) as strategy:
        assert timed(lambda: connect_fails(strategy)) < CONNECT + 1


def test_qpid_attempt_to_a_black_hole_is_bounded_by_the_connect_timeout() -> None:
    with BlackHole() as hole, qpid(hole.port) as strategy:
        assert timed(lambda: connect_fails(strategy)) < CONNECT + 1


@pytest.mark.broker
@pytest.mark.parametrize("name", ["rabbit", "qpid"])
def test_failover_reaches_the_next_host_within_the_bound(
    name: str, rabbit_node: RabbitNode
) -> None:
    with BlackHole() as hole:
        strategy = (
            rabbit(hole.url, rabbit_node.url)
            if name == "rabbit"
            else qpid(hole.port, rabbit_node.port)
        )
        with strategy:
            publisher = strategy.publisher(strategy.target)
            try:
                took = timed(publisher.connect)
            finally:
                publisher.close()
    assert took < CONNECT + 3  # the black hole's bound, then a real connection


@pytest.mark.parametrize("name", ["rabbit", "qpid"])
def test_close_is_bounded_by_close_timeout_against_a_black_hole(name: str) -> None:
    with BlackHole() as hole:
        options = {"close_timeout": 2.0}
        strategy = rabbit(hole.url, **options) if name == "rabbit" else qpid(hole.port, **options)
        strategy.emit(Notification.create("image.send", "INFO", {"i": 1}))
        time.sleep(0.3)  # the worker is in its connection attempt now
        assert timed(strategy.close) < 2.0 + 1


@pytest.mark.parametrize("name", ["rabbit", "qpid"])
def test_instrument_check_timeout_5_against_a_black_hole_returns_within_6_s(name: str) -> None:
    with BlackHole() as hole:
        option = (
            f"transport_url={hole.url}"
            if name == "rabbit"
            else (f"qpid_transport_url=amqp://127.0.0.1:{hole.port}")
        )
        command = [sys.executable, "-m", "instrument.cli", "check", "--timeout", "5"]
        command += ["-o", f"strategy={name}", "-o", option]
        started = time.monotonic()
        check = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
    assert check.returncode == 1, check.stderr
    assert "timed out" in check.stderr and "guest:guest" not in check.stderr
    assert took < 6, f"{took:.1f} s"
