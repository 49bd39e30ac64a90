"""Payload builders and redaction of credential-bearing keys."""

from __future__ import annotations

import dataclasses

import pytest

from instrument import Notifier, error_payload, image_payload, send_payload
from instrument.payloads import CUT_MARKER, image_id_of, redacted
from instrument.strategies.memory import MemoryStrategy

IMAGE = {
    "id": "5e1a",
    "name": "cirros",
    "status": "active",
    "location": "swift+https://user:key@swift/v1/images/5e1a",
    "locations": [{"url": "rbd://secret", "metadata": {}}],
    "direct_url": "file:///var/lib/glance/images/5e1a",
    "properties": {"Location": "s3://key@bucket", "kernel_id": "k"},
}


def test_locations_and_direct_url_are_always_removed_at_any_depth() -> None:
    payload = image_payload(IMAGE)
    assert payload == {
        "id": "5e1a",
        "name": "cirros",
        "status": "active",
        "properties": {"kernel_id": "k"},
    }


def test_configured_keys_are_redacted_too() -> None:
    assert image_payload(IMAGE, redact=["Kernel_ID", "name"]) == {
        "id": "5e1a",
        "status": "active",
        "properties": {},
    }


@dataclasses.dataclass
class Image:
    id: str
    size: int
    locations: list[str]


class Record:
    def as_dict(self) -> dict[str, object]:
        return {"id": "r1", "direct_url": "x"}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image("d1", 3, ["rbd://k"]), {"id": "d1", "size": 3}),
        (Record(), {"id": "r1"}),
        ("bare-id", {"id": "bare-id"}),
    ],
)
def test_image_metadata_from_dataclass_object_or_id(
    image: object, expected: dict[str, object]
) -> None:
    assert image_payload(image) == expected
    assert image_id_of(image) == expected["id"]


def test_image_payload_refuses_what_it_cannot_read() -> None:
    with pytest.raises(TypeError, match="cannot read image metadata from int"):
        image_payload(42)


def test_a_payload_nested_too_deeply_is_cut_and_marked_not_raised() -> None:
    image: dict[str, object] = {"id": "5e1a", "location": "swift://user:key@swift/x"}
    node = image
    for _ in range(40):  # 40 levels, each with a credential key to remove
        child: dict[str, object] = {"location": "rbd://secret"}
        node["child"] = child
        node = child
    for payload in (image_payload(image), redacted(image)):
        assert payload["id"] == "5e1a"
        assert payload["truncated"] is True
        assert CUT_MARKER in repr(payload)
        assert "secret" not in repr(payload) and "key@" not in repr(payload)


def test_send_payload_has_the_spec_fields() -> None:
    assert send_payload(
        image_id="i",
        owner_id="o",
        receiver_tenant_id="t",
        receiver_user_id="u",
        destination_ip="10.0.0.1",
        bytes_sent=12,
    ) == {
        "image_id": "i",
        "owner_id": "o",
        "receiver_tenant_id": "t",
        "receiver_user_id": "u",
        "destination_ip": "10.0.0.1",
        "bytes_sent": 12,
    }


def test_error_payload_names_event_image_and_problem() -> None:
    assert error_payload("image.upload", "5e1a", "409 Conflict") == (
        "image.upload failed for image 5e1a: 409 Conflict"
    )
    assert "unidentified image" in error_payload("image.create", None, "500")


def test_notifier_redacts_dict_payloads_given_directly() -> None:
    memory = MemoryStrategy()
    Notifier(memory, redact=["secret"]).info("image.update", {**IMAGE, "secret": 1})
    payload = memory.notifications[0].payload
    assert "locations" not in payload and "direct_url" not in payload and "secret" not in payload
    assert payload["name"] == "cirros"


def test_error_payload_masks_credentials_in_urls() -> None:
    text = error_payload("image.upload", "i", "StoreError: swift://glance:s3cr3t@swift/v1/x")
    assert "s3cr3t" not in text and "swift://***@swift/v1/x" in text


def test_error_payload_masks_secrets_holding_slashes_and_at_signs() -> None:
    s3 = error_payload("image.upload", "i", "BadStoreUri: s3://AKIA:wJalr/XUtnFEMI@s3.example/b/o")
    swift = error_payload("image.upload", "i", "swift://t:u:p@ss@host/v1/x gone")
    assert "wJalr" not in s3 and "XUtnFEMI" not in s3 and "s3://***@s3.example/b/o" in s3
    assert "p@ss" not in swift and "ss@host" not in swift and "swift://***@host/v1/x" in swift
