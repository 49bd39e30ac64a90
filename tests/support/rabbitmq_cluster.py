"""A private three-node RabbitMQ cluster for the suite, made of :class:`RabbitNode`\\ s.

Decisions, and why:

* **Built from :class:`~tests.support.rabbitmq.RabbitNode`**, nothing copied: every
  node has its own free AMQP and distribution ports, its own base directory and the
  name ``inst-<amqp port>@localhost``, so parallel runs never collide. Debian's package
  runs every node as user ``rabbitmq``; the nodes share one Erlang cookie (written
  into each base directory, which is each node's ``HOME``), so ``rabbitmqctl`` of any
  node reaches them all.
* **Joined the documented way**: the nodes start in parallel (start-up dominates the
  cost), then every node but the first runs ``stop_app; reset; join_cluster
  <first>; start_app``.
* **Queues on every node**: a policy mirrors all queues to all nodes with automatic
  sync (classic mirrored queues, still in 3.10), so a node killed with SIGKILL loses no
  confirmed message and the strategies' own declarations (plain classic queues) work
  unchanged. Exchanges and bindings are cluster-wide anyway.
* A member killed or stopped comes back with :meth:`RabbitNode.start` and rejoins by
  itself (its mnesia directory says it is a member).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from types import TracebackType

from tests.support.rabbitmq import RabbitError, RabbitNode

__all__ = ["RabbitCluster"]

_MIRROR_ALL = '{"ha-mode":"all","ha-sync-mode":"automatic"}'


class RabbitCluster:
    """*size* private nodes on 127.0.0.1 joined into one cluster."""

    def __init__(self, size: int = 3) -> None:
        cookie = secrets.token_hex(16).upper()
        self.nodes = [RabbitNode(cookie=cookie) for _ in range(size)]

    @property
    def urls(self) -> list[str]:
        """Every node's kombu URL (guest), first node first."""
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 120.0) -> RabbitCluster:
        """Start every node (in parallel), join them to the first, mirror all queues."""
        _parallel([lambda node=node: node.start(timeout) for node in self.nodes])
        first = self.nodes[0].nodename
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("reset")
            node.ctl("join_cluster", first)
            node.ctl("start_app")
        self.nodes[0].ctl("set_policy", "mirror-all", ".*", _MIRROR_ALL, "--apply-to", "queues")
        running = self.nodes[0].ctl("eval", "length(rabbit_nodes:all_running()).").strip()
        if running != str(len(self.nodes)):
            raise RabbitError(f"cluster has {running} running nodes, not {len(self.nodes)}")
        return self

    def connections(self) -> int:
        """Client connections open anywhere in the cluster (asked of a running node)."""
        node = next(node for node in self.nodes if node.running)
        lines = node.ctl("list_connections", "--quiet", "--no-table-headers", "name")
        return len([line for line in lines.splitlines() if line.strip()])

    def close(self) -> None:
        """Stop every node and delete its directory."""
        _parallel([node.close for node in self.nodes])

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _parallel(actions: Sequence[object]) -> None:
    """Run the callables in *actions* in threads; raise the first error any raised."""
    errors: list[BaseException] = []

    def run(action: object) -> None:
        try:
            action()  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
