"""Publisher confirms of one channel: which delivery tags are outstanding, and any nack.

Decisions:

* **Pipelined**, on AMQP 0-9-1: the channel is put in confirm mode, the whole batch is
  written, then acks are drained until *every* delivery tag of the batch is confirmed.
  The outstanding tags are a set; an ack removes its tag (all tags up to it when
  ``multiple``). Confirms of messages routed to different queues arrive out of order,
  so "the highest tag was acked" proves nothing about lower tags. One round trip per
  batch instead of one per message (kombu's ``confirm_publish``).
* Any nack (single or ``multiple``) or a timeout fails the whole batch; the engine
  resends it (duplicates possible, never losses).
* **A returned message fails the batch too.** Messages are published ``mandatory``: a
  message no queue took (the queues deleted or unbound, or in a cluster on a node that
  is down while the connection's node is up) is returned before it is acked, where
  without ``mandatory`` the broker would ack it and drop it. The engine resends the
  batch on a new connection, which declares the queues again (or fails while their
  node is down, and the notifications are kept).
* **No timeout while blocked**: during ``connection.blocked`` the broker confirms
  nothing; the wait is the alarm's (:mod:`._alarm`), and the confirm timeout starts
  again once it is over.
"""

from __future__ import annotations

import time
from typing import Any

from ...exceptions import DeliveryError
from ._alarm import Alarm

__all__ = ["Confirms"]


class Confirms:
    """The delivery tags of one confirming channel."""

    def __init__(self) -> None:
        self.published = 0  # delivery tag of the last message published on the channel
        self.outstanding: set[int] = set()  # delivery tags not confirmed yet
        self.nacked = False
        self.returned: list[str] = []  # why messages of the batch were returned

    def listen(self, channel: Any) -> None:
        """Follow the acks and nacks of *channel* (new, in confirm mode: no tag used)."""
        self.published = 0
        self.start_batch()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)

    def start_batch(self) -> None:
        self.outstanding.clear()
        self.nacked = False
        self.returned.clear()

    def add(self, count: int) -> None:
        """*count* more messages were published on the channel."""
        first = self.published + 1
        self.published += count
        self.outstanding.update(range(first, self.published + 1))

    def wait(self, conn: Any, alarm: Alarm, timeout: float, heartbeat: bool) -> None:
        """Drain kombu connection *conn* until every tag is acked; raise on any nack."""
        deadline = time.monotonic() + timeout
        while self.outstanding and not self.nacked:
            if alarm.blocked:  # no timeout while the broker says it is blocked
                alarm.wait_over(conn, heartbeat)
                deadline = time.monotonic() + timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeliveryError(
                    f"the broker did not confirm {len(self.outstanding)} messages "
                    f"within {timeout:g} s"
                )
            try:
                conn.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if self.nacked:
            raise DeliveryError("the broker refused (nacked) messages of the batch")
        if self.returned:
            raise DeliveryError(
                f"the broker returned {len(self.returned)} messages of the batch, "
                f"which no queue took ({self.returned[0]})"
            )

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self.outstanding = {tag for tag in self.outstanding if tag > delivery_tag}
        else:
            self.outstanding.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked = True

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self.returned.append(f"exchange {exchange!r}, routing key {routing_key!r}: {exc}")
