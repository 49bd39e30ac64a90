"""The envelope: fields, formats, and serialisation of awkward payloads."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import time
import uuid

import pytest

from instrument import EVENT_TYPES, PRIORITIES, Notification

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")


def test_envelope_has_exactly_the_spec_fields_in_order() -> None:
    note = Notification.create("image.create", "INFO", {"id": "1"})
    assert list(note.to_dict()) == [
        "message_id",
        "publisher_id",
        "event_type",
        "priority",
        "timestamp",
        "payload",
    ]


def test_message_id_is_a_fresh_uuid4_string() -> None:
    first = Notification.create("image.create", "INFO", {})
    second = Notification.create("image.create", "INFO", {})
    assert uuid.UUID(first.message_id).version == 4
    assert first.message_id != second.message_id


def test_publisher_id_defaults_to_the_host_name() -> None:
    assert Notification.create("image.create", "INFO", {}).publisher_id == socket.gethostname()
    assert (
        Notification.create("image.create", "INFO", {}, publisher_id="api-1").publisher_id
        == "api-1"
    )


def test_timestamp_is_utc_in_glance_format_with_microseconds() -> None:
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    stamp = Notification.create("image.create", "INFO", {}).timestamp
    assert TIMESTAMP.match(stamp)
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")
    assert abs((parsed - before).total_seconds()) < 5


def _stamp_at(monkeypatch: pytest.MonkeyPatch, moment: dt.datetime) -> str:
    """The timestamp of a notification created at *moment*."""
    nanoseconds = round(moment.timestamp()) * 1_000_000_000
    monkeypatch.setattr(time, "time_ns", lambda: nanoseconds)
    return Notification.create("image.create", "INFO", {}).timestamp


def test_timestamp_keeps_zero_microseconds_unlike_str_datetime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    moment = dt.datetime(2013, 4, 4, 19, 32, 3, tzinfo=dt.timezone.utc)
    assert _stamp_at(monkeypatch, moment) == "2013-04-04 19:32:03.000000"


def test_timestamp_converts_other_zones_to_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    zone = dt.timezone(dt.timedelta(hours=2))
    monkeypatch.setenv("TZ", "Etc/GMT-2")  # the process's own zone is 2 hours ahead
    time.tzset()
    try:
        assert (
            _stamp_at(monkeypatch, dt.datetime(2020, 1, 1, 12, 0, tzinfo=zone))
            == "2020-01-01 10:00:00.000000"
        )
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_the_seven_event_types_and_three_priorities() -> None:
    assert EVENT_TYPES == (
        "image.create",
        "image.prepare",
        "image.upload",
        "image.activate",
        "image.send",
        "image.update",
        "image.delete",
    )
    assert PRIORITIES == ("INFO", "WARN", "ERROR")


def test_unknown_priority_is_refused() -> None:
    with pytest.raises(ValueError, match="INFO, WARN, ERROR"):
        Notification.create("image.create", "DEBUG", {})


def test_to_json_round_trips_through_from_dict() -> None:
    note = Notification.create("image.send", "ERROR", {"bytes_sent": 3})
    assert Notification.from_dict(json.loads(note.to_json())) == note
