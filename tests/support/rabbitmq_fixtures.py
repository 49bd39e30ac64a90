"""pytest fixtures giving tests real RabbitMQ nodes (see :mod:`tests.support.rabbitmq`).

Load with ``pytest_plugins = ["tests.support.rabbitmq_fixtures"]`` in the root
``conftest.py`` (or in a test module).

Fixtures:

* ``rabbit_node`` (session): one shared node, started once per session.  Tests must
  not stop it; isolate state with unique queue/exchange names or ``add_vhost``.
* ``rabbit_tls_node`` (session): a shared node that also serves AMQP over TLS
  (``node.tls_url``, ``node.amqp1_tls_url``, ``node.ca_file``).
* ``fresh_rabbit_node`` (function): a factory ``make(*, tls=False, start=True)`` for
  tests that stop, restart or kill brokers.  Every call gives a new node (call it
  twice for a failover pair); all are closed when the test ends.

When the broker cannot be installed or started, the fixtures skip the test with the
reason, printed in the terminal summary, unless the environment says this is CI
(``CI`` set to anything but ``""``, ``0``, ``false`` or ``no``): there a missing broker
is a broken CI machine and the fixtures fail the test instead of hiding it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn, Protocol

import pytest

from tests.support.rabbitmq import RabbitError, RabbitNode, ensure_installed

__all__ = [
    "NodeFactory",
    "broker_unavailable",
    "fresh_rabbit_node",
    "in_ci",
    "rabbit_node",
    "rabbit_tls_node",
]


class NodeFactory(Protocol):
    def __call__(self, *, tls: bool = False, start: bool = True) -> RabbitNode: ...


def in_ci() -> bool:
    """Whether we run in CI, where a missing broker must fail, not skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


_reported: set[str] = set()


def _print_now(config: pytest.Config, line: str) -> None:
    """Write to the terminal at once, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(line, yellow=True)
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(line, yellow=True)


def broker_unavailable(config: pytest.Config, reason: str) -> NoReturn:
    """Skip (locally) or fail (in CI) the current test because there is no broker."""
    message = f"RabbitMQ unavailable: {reason}"
    if in_ci():
        pytest.fail(f"{message}\n(CI is set, so a missing broker is an error)", pytrace=False)
    first_line = message.splitlines()[0]
    if first_line not in _reported:  # say it once, not once per skipped test
        _reported.add(first_line)
        _print_now(config, f"SKIPPING broker tests: {first_line} (set CI=1 to fail instead)")
    pytest.skip(message)


def _start(config: pytest.Config, **kwargs: bool) -> RabbitNode:
    try:
        ensure_installed()
        # A small frame_max, so that notifications well under the kit's 64 KiB bound
        # still span several frames, as large ones do against a default broker.
        node = RabbitNode(extra_config=["frame_max = 8192"], **kwargs)  # type: ignore[arg-type]
        return node.start()
    except (RabbitError, OSError) as exc:
        broker_unavailable(config, str(exc))


@pytest.fixture(scope="session")
def rabbit_node(pytestconfig: pytest.Config) -> Iterator[RabbitNode]:
    """The session's shared node (plain AMQP 0-9-1 + AMQP 1.0 on ``node.port``)."""
    node = _start(pytestconfig)
    yield node
    node.close()


@pytest.fixture(scope="session")
def rabbit_tls_node(pytestconfig: pytest.Config) -> Iterator[RabbitNode]:
    """The session's shared node with a TLS listener (``node.tls_port``, ``ca_file``)."""
    node = _start(pytestconfig, tls=True)
    yield node
    node.close()


@pytest.fixture
def fresh_rabbit_node(pytestconfig: pytest.Config) -> Iterator[NodeFactory]:
    """Factory of private nodes the test may stop, restart or kill; closed afterwards."""
    nodes: list[RabbitNode] = []

    def make(*, tls: bool = False, start: bool = True) -> RabbitNode:
        if start:
            node = _start(pytestconfig, tls=tls)
        else:
            try:
                ensure_installed()
            except (RabbitError, OSError) as exc:
                broker_unavailable(pytestconfig, str(exc))
            node = RabbitNode(tls=tls)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()
