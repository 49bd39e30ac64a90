"""JSON-safe payloads: awkward values converted, credential keys removed in the same pass."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import logging
import pathlib
import uuid

import pytest

from instrument.payloads import JSONSafe, jsonable


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Disk:
    format: str
    size: int


class Model:
    def to_dict(self) -> dict[str, object]:
        return {"id": uuid.UUID(int=1)}


def test_awkward_values_become_json() -> None:
    payload = {
        "aware": dt.datetime(2020, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        "naive": dt.datetime(2020, 1, 1, 12, 0, 0, 5),
        "date": dt.date(2020, 1, 2),
        "uuid": uuid.UUID(int=7),
        "decimal": decimal.Decimal("1.50"),
        "path": pathlib.PurePosixPath("/var/lib/images"),
        "enum": Colour.RED,
        "bytes": b"caf\xc3\xa9\xff",
        "set": {3},
        "tuple": (1, 2),
        "dataclass": Disk("qcow2", 10),
        "model": Model(),
        "nan": float("nan"),
        5: "int key",
    }
    out = jsonable(payload)
    json.dumps(out, allow_nan=False)
    assert out["aware"] == "2020-01-01T11:00:00Z"
    assert out["naive"] == "2020-01-01T12:00:00.000005Z"
    assert out["date"] == "2020-01-02"
    assert out["uuid"] == str(uuid.UUID(int=7))
    assert out["decimal"] == "1.50"
    assert out["path"] == "/var/lib/images"
    assert out["enum"] == "red"
    assert out["bytes"] == "café\\xff"
    assert out["set"] == [3] and out["tuple"] == [1, 2]
    assert out["dataclass"] == {"format": "qcow2", "size": 10}
    assert out["model"] == {"id": str(uuid.UUID(int=1))}
    assert out["nan"] == "nan"
    assert out["5"] == "int key"


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


def test_unserialisable_value_becomes_repr_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="instrument.payloads"):
        first = jsonable({"x": Opaque()})
        second = jsonable([Opaque()])
    assert first == {"x": "<Opaque thing>"} and second == ["<Opaque thing>"]
    assert len([r for r in caplog.records if "Opaque" in r.getMessage()]) == 1


class Broken:
    def to_dict(self) -> dict[str, object]:
        raise RuntimeError("database gone")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def test_serialising_never_raises_even_for_hostile_objects() -> None:
    out = jsonable({"broken": Broken()})
    assert out == {"broken": "<unrepresentable Broken>"}


def test_self_referencing_payload_is_cut_not_recursed_forever() -> None:
    loop: list[object] = []
    loop.append(loop)
    out = jsonable(loop)
    json.dumps(out)


class Chained:
    """A model whose to_dict() names another model, on and on (an ORM back-reference)."""

    def __init__(self, depth: int = 0) -> None:
        self.depth = depth

    def to_dict(self) -> dict[str, object]:
        return {"depth": self.depth, "next": Chained(self.depth + 1)}


def test_a_chain_of_models_nested_too_deeply_is_cut_and_marked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="instrument.payloads"):
        out = jsonable({"id": "i1", "model": Chained()})
    assert out["id"] == "i1" and out["truncated"] is True
    assert "<cut: nested too deeply>" in json.dumps(out)
    assert out["model"]["next"]["depth"] == 1  # cut far below, not at the top
    assert not [r for r in caplog.records if "to_dict() raised" in r.getMessage()]


def test_json_safe_payloads_are_redacted_without_being_copied_when_clean() -> None:
    clean = JSONSafe({"id": "1", "properties": {"a": 1}, "tags": ["x"]})
    assert jsonable(clean, frozenset({"location"})) is clean
    leaky = JSONSafe(
        {"id": "1", "properties": {"Location": "swift://k@s"}, "list": [{"direct_url": 1}]}
    )
    out = jsonable(leaky, frozenset({"location", "direct_url"}))
    assert out == {"id": "1", "properties": {}, "list": [{}]}
    assert leaky["properties"] == {"Location": "swift://k@s"}, "the original is not modified"


def test_redaction_memo_never_lets_a_hidden_key_through() -> None:
    """Keys seen to survive are remembered per redaction set; hidden ones never are."""
    from instrument import _jsonsafe

    without = frozenset({"secret_key"})
    for _ in range(3):  # the first pass fills the memo, the later ones use it
        out = jsonable(JSONSafe({"id": "1", "Secret_Key": "k", "name": "n"}), without)
        assert out == {"id": "1", "name": "n"}
    other = frozenset({"name"})  # another Notifier hides what the first one let through
    assert jsonable(JSONSafe({"id": "1", "name": "n"}), other) == {"id": "1"}
    assert "secret_key" not in _jsonsafe._survivors[without]
    assert "Secret_Key" not in _jsonsafe._survivors[without]


def test_redaction_memo_is_bounded_and_still_redacts_when_full() -> None:
    from instrument import _jsonsafe

    without = frozenset({"password"})
    for start in range(0, _jsonsafe._SURVIVORS_MAX + 1000, 500):
        jsonable({f"key{number}": 1 for number in range(start, start + 500)}, without)
    assert len(_jsonsafe._survivors[without]) == _jsonsafe._SURVIVORS_MAX
    fresh = {"unseen-key": 1, "PASSWORD": "p", "nested": [{"Password": "p", "x": 2}]}
    assert jsonable(fresh, without) == {"unseen-key": 1, "nested": [{"x": 2}]}


def test_dict_subclasses_inside_json_safe_lists_are_redacted_too() -> None:
    from collections import OrderedDict

    payload = JSONSafe(
        {"id": "1", "tags": [OrderedDict(password="s", a=1)], "deep": [[{"Password": "s"}]]}
    )
    assert jsonable(payload, {"password"}) == {"id": "1", "tags": [{"a": 1}], "deep": [[{}]]}
