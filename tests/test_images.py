"""Reading image metadata from response bodies: the orjson and json paths agree."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrument import images
from instrument.images import image_from_body, parse_json
from instrument.payloads import finite_floats

if os.environ.get("CI"):  # CI installs instrument[all]: the fast path must be tested there
    import orjson
else:
    orjson = pytest.importorskip("orjson", reason="instrument[speedups] is not installed")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def stdlib_only(body: bytes) -> Any:
    """What parse_json answers without orjson (ValueError is the answer for non-JSON).

    That is json.loads, with the non-finite numbers JSON does not have (and numbers
    beyond a float's range) as their names.
    """
    try:
        return finite_floats(json.loads(body, parse_constant=lambda name: str(float(name))))
    except ValueError as exc:
        return ValueError(type(exc).__name__)


def either(body: bytes) -> Any:
    """parse_json's answer with orjson, and checked equal to its answer without."""
    answers = []
    for fast_loads in (images._fast_loads, None):
        images._fast_loads = fast_loads
        try:
            answers.append(parse_json(body))
        except ValueError as exc:
            answers.append(ValueError(type(exc).__name__))
        finally:
            images._fast_loads = orjson.loads
    assert same(*answers), (body, answers)
    return answers[0]


def same(a: Any, b: Any) -> bool:
    # NaN != NaN: compare the JSON text of both results (keys in their order) instead.
    if isinstance(a, ValueError) or isinstance(b, ValueError):
        return type(a) is type(b) and str(a) == str(b)
    return json.dumps(a) == json.dumps(b)


def test_the_fast_parser_is_in_use() -> None:
    assert images._fast_loads is orjson.loads


@given(json_values | st.integers(min_value=-(2**70), max_value=2**70))
def test_parse_json_gives_what_json_gives_for_any_document(value: Any) -> None:
    for body in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode()):
        assert same(either(body), stdlib_only(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"size": NaN, "id": "1"}',  # json accepts NaN, orjson does not
        b'{"size": 123456789012345678901234567890, "id": "1"}',  # beyond 64 bits
        b'{"size": 18446744073709551616, "id": "1"}',  # just beyond an unsigned 64-bit
        b'{"size": -9223372036854775809, "id": "1"}',  # just below a signed 64-bit
        b'{"size": 18446744073709551615, "id": "1"}',  # orjson's largest
        b'{"size": 1.5e400, "id": "1"}',
        b'{"id": "\\ud800"}',  # a lone surrogate
        '\ufeff{"id": "1"}'.encode(),  # a byte-order mark
        '{"id": "1"}'.encode("utf-16"),
        b'{"id": "1", "id": "2"}',  # duplicate keys: the last one wins in both
        b'  {"id": "1"}  \n',
        b'{"id": "1"}\t\r\n ',
        '{"id": "1"}\u00a0'.encode(),  # not JSON whitespace
        b'{"id": "1"}\x0c',  # not JSON whitespace either
        b'{"id": "1"}{}',
        b'{"id": "1", }',
        b'{"id": "\x01"}',  # a control character
        b"{",
        b'{"id": "1"} trailing',
        b'{"id": ',
        b"\xff\xfe\x00",
        b"",
    ],
)
def test_parse_json_agrees_with_json_where_orjson_is_stricter(body: bytes) -> None:
    assert same(either(body), stdlib_only(body))


def test_image_from_body_reads_bodies_orjson_refuses() -> None:
    image = image_from_body(b'{"id": "1", "size": 123456789012345678901234567890}')
    assert image is not None and image["size"] == 123456789012345678901234567890


def test_payloads_derived_from_a_response_stay_json_safe_so_they_are_not_converted_again() -> None:
    from instrument.images import deleted_image, prepared_image
    from instrument.payloads import JSONSafe

    seen = image_from_body(b'{"id": "1", "status": "queued", "name": "n"}')
    assert isinstance(seen, JSONSafe)
    prepared, deleted = prepared_image(seen), deleted_image(seen)
    assert isinstance(prepared, JSONSafe) and prepared["status"] == "saving"
    assert isinstance(deleted, JSONSafe) and deleted["deleted"] is True
    assert seen["status"] == "queued", "the image seen is not changed"
    assert not isinstance(deleted_image({"id": "2"}), JSONSafe), "a plain dict stays plain"
