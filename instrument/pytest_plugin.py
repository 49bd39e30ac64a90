"""The pytest plugin installed with ``instrument``: the ``notifications`` fixture.

def test_create_emits(notifications, client):
    client.post("/v2/images", json={"name": "cirros"})
    assert notifications.events == [("image.create", "INFO")]
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import CapturedNotifications, capture


@pytest.fixture
def notifications() -> Iterator[CapturedNotifications]:
    """The notifications emitted by any Notifier during the test."""
    with capture() as captured:
        yield captured
