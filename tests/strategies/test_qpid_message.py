"""The qpid strategy's own AMQP 1.0 message encoding: the same bytes as proton's Message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrument.strategies.qpid._message import encode_message

proton = pytest.importorskip("proton")


def proton_encoding(body: bytes, message_id: str, subject: str, creation_ms: int) -> bytes:
    message = proton.Message(inferred=True, content_type="application/json", durable=True)
    message.body = body
    message.id = message_id
    message.subject = subject
    message.creation_time = creation_ms / 1000
    return bytes(message.encode())


@pytest.mark.parametrize("creation_ms", [1, 1_764_043_200_123, 2**62])  # proton omits 0
@pytest.mark.parametrize("body_size", [0, 1, 255, 256, 300, 70_000])
@pytest.mark.parametrize("subject", ["notifications.info", "n" * 300, "notifications.é"])
def test_bytes_equal_protons_for_every_size_class(
    body_size: int, subject: str, creation_ms: int
) -> None:
    body = b"x" * body_size
    arguments = (body, "0b8c1f9e-3d3a-4d5e-9f00-6a1b2c3d4e5f", subject, creation_ms)
    assert encode_message(*arguments) == proton_encoding(*arguments)


# proton reads strings back as C strings: a NUL would end them early (its limit, not
# ours); lone surrogates cannot be encoded as UTF-8 at all.
texts = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))


@given(
    body=st.binary(max_size=600),
    message_id=st.text(texts, max_size=300),
    subject=st.text(texts, min_size=1, max_size=300),
    # proton hands creation_time back as float seconds: exact to the ms below 2**43 ms
    # (year 2248); the byte-level test above covers larger values.
    creation_ms=st.integers(min_value=0, max_value=2**43),
)
def test_proton_decodes_what_it_would_have_encoded(
    body: bytes, message_id: str, subject: str, creation_ms: int
) -> None:
    decoded = proton.Message()
    decoded.decode(encode_message(body, message_id, subject, creation_ms))
    assert decoded.body == body
    assert decoded.id == message_id
    assert decoded.subject == subject
    assert decoded.content_type == "application/json"
    assert decoded.durable is True
    assert round(decoded.creation_time * 1000) == creation_ms
