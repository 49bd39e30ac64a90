"""The Notifier: priorities, disabled events, fan-out and failure isolation."""

from __future__ import annotations

import logging

import pytest

from instrument import Notification, Notifier, Strategy, StrategyError
from instrument.strategies.memory import MemoryStrategy


class Exploding(Strategy):
    name = "exploding"

    def __init__(self) -> None:
        self.calls = 0

    def emit(self, notification: Notification) -> None:
        self.calls += 1
        raise ConnectionError("broker unreachable")

    def check(self, timeout: float = 10.0) -> None:
        raise StrategyError("connection refused")

    def flush(self, timeout: float | None = None) -> bool:
        raise RuntimeError("flush broke")


@pytest.mark.parametrize(
    ("method", "priority"), [("info", "INFO"), ("warn", "WARN"), ("error", "ERROR")]
)
def test_each_method_emits_its_priority(method: str, priority: str) -> None:
    memory = MemoryStrategy()
    returned = getattr(Notifier(memory), method)("image.update", {"id": "1"})
    assert memory.notifications == [returned]
    assert returned.priority == priority and returned.event_type == "image.update"


def test_default_strategy_is_noop_and_publisher_is_configurable() -> None:
    notifier = Notifier(publisher_id="glance-api-7")
    assert [s.name for s in notifier.strategies] == ["noop"]
    assert notifier.info("image.create", {}).publisher_id == "glance-api-7"


@pytest.mark.parametrize(
    ("disabled", "emitted"),
    [
        (["image.send"], ["image.create", "image.upload", "image.member.create"]),
        (["image"], []),
        (["image.member"], ["image.create", "image.send", "image.upload"]),
        (["imag"], ["image.create", "image.send", "image.upload", "image.member.create"]),
    ],
)
def test_disabled_notifications_exact_type_or_group(
    disabled: list[str], emitted: list[str]
) -> None:
    memory = MemoryStrategy()
    notifier = Notifier(memory, disabled_notifications=disabled)
    for event_type in ["image.create", "image.send", "image.upload", "image.member.create"]:
        notifier.info(event_type, {})
    assert sorted(n.event_type for n in memory.notifications) == sorted(emitted)
    assert notifier.stats()["notifier"]["disabled"] == 4 - len(emitted)


def test_a_failing_strategy_does_not_stop_the_others_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad, memory = Exploding(), MemoryStrategy()
    notifier = Notifier([bad, memory])
    with caplog.at_level(logging.ERROR, logger="instrument.notifier"):
        for _ in range(5):
            assert notifier.info("image.create", {"id": "1"}) is not None
    assert len(memory.notifications) == 5 and bad.calls == 5
    stats = notifier.stats()
    assert stats["exploding"] == {"sent": 0, "failed": 5, "dropped": 0}
    assert stats["memory"] == {"sent": 5, "failed": 0, "dropped": 0}
    failures = [r for r in caplog.records if "broker unreachable" in r.getMessage()]
    assert len(failures) == 1, "failures are rate-limited, not one line per notification"


def test_check_names_the_failing_strategy() -> None:
    with pytest.raises(StrategyError, match="strategy 'exploding': connection refused"):
        Notifier([MemoryStrategy(), Exploding()]).check()


def test_flush_and_close_never_raise() -> None:
    notifier = Notifier([Exploding(), MemoryStrategy()])
    assert notifier.flush(0.1) is False
    notifier.close()


def test_unbuildable_notification_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    memory = MemoryStrategy()
    with caplog.at_level(logging.ERROR, logger="instrument.notifier"):
        assert Notifier(memory).notify("LOUD", "image.create", {}) is None
    assert memory.notifications == []
    assert "cannot build image.create" in caplog.text


def test_two_strategies_of_the_same_name_get_distinct_stats_rows() -> None:
    stats = Notifier([MemoryStrategy(), MemoryStrategy()]).stats()
    assert set(stats) == {"notifier", "memory", "memory#2"}


def test_payload_is_copied_so_later_mutation_changes_nothing() -> None:
    memory = MemoryStrategy()
    payload = {"id": "1", "tags": ["a"]}
    Notifier(memory).info("image.update", payload)
    payload["tags"].append("b")
    assert memory.notifications[0].payload == {"id": "1", "tags": ["a"]}
