"""The capture helper and the pytest ``notifications`` fixture offered to users."""

from __future__ import annotations

import threading

import pytest

from instrument import Notifier
from instrument.testing import capture

pytest_plugins = ["pytester"]


def test_capture_sees_every_notifier_whatever_its_strategy() -> None:
    with capture() as captured:
        Notifier().info("image.create", {"id": "1"})
        Notifier().error("image.send", {"bytes_sent": 1})
    Notifier().info("image.delete", {"id": "1"})
    assert captured.events == [("image.create", "INFO"), ("image.send", "ERROR")]
    assert captured.payloads("image.create") == [{"id": "1"}]


def test_capture_wait_for_notifications_from_other_threads() -> None:
    with capture() as captured:
        threading.Timer(0.05, Notifier().info, ("image.upload", {})).start()
        assert captured.wait_for(1, timeout=5)
    assert captured.event_types == ["image.upload"]


def test_notifications_fixture_is_available_to_users_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from instrument import Notifier

        def test_user_app(notifications):
            Notifier().info("image.create", {"id": "7"})
            assert notifications.events == [("image.create", "INFO")]

        def test_fixture_starts_empty(notifications):
            assert list(notifications) == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
