"""JSON schemas served at /v2/schemas/image(s); python-glanceclient builds its models from them."""

from __future__ import annotations

from typing import Any

_NULLABLE_STRING: dict[str, Any] = {"type": ["null", "string"]}

IMAGE_SCHEMA: dict[str, Any] = {
    "name": "image",
    "additionalProperties": {"type": "string"},
    "links": [
        {"href": "{self}", "rel": "self"},
        {"href": "{file}", "rel": "enclosure"},
        {"href": "{schema}", "rel": "describedby"},
    ],
    "properties": {
        "id": {
            "type": "string",
            "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}"
            "-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$",
            "description": "An identifier for the image",
        },
        "name": {
            **_NULLABLE_STRING,
            "maxLength": 255,
            "description": "Descriptive name for the image",
        },
        "status": {
            "type": "string",
            "readOnly": True,
            "enum": [
                "queued",
                "saving",
                "active",
                "killed",
                "deleted",
                "uploading",
                "importing",
                "pending_delete",
                "deactivated",
            ],
        },
        "visibility": {"type": "string", "enum": ["community", "public", "private", "shared"]},
        "protected": {"type": "boolean"},
        "os_hidden": {"type": "boolean"},
        "checksum": {**_NULLABLE_STRING, "readOnly": True},
        "os_hash_algo": {**_NULLABLE_STRING, "readOnly": True},
        "os_hash_value": {**_NULLABLE_STRING, "readOnly": True},
        "owner": {**_NULLABLE_STRING},
        "size": {"type": ["null", "integer"], "readOnly": True},
        "virtual_size": {"type": ["null", "integer"], "readOnly": True},
        "container_format": {
            **_NULLABLE_STRING,
            "enum": [None, "ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"],
        },
        "disk_format": {
            **_NULLABLE_STRING,
            "enum": [
                None,
                "ami",
                "ari",
                "aki",
                "vhd",
                "vhdx",
                "vmdk",
                "raw",
                "qcow2",
                "vdi",
                "iso",
                "ploop",
            ],
        },
        "created_at": {"type": "string", "readOnly": True},
        "updated_at": {"type": "string", "readOnly": True},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
        "direct_url": {"type": "string", "readOnly": True},
        "min_ram": {"type": "integer"},
        "min_disk": {"type": "integer"},
        "self": {"type": "string", "readOnly": True},
        "file": {"type": "string", "readOnly": True},
        "schema": {"type": "string", "readOnly": True},
        "locations": {"type": "array", "items": {"type": "object"}},
    },
}

IMAGES_SCHEMA: dict[str, Any] = {
    "name": "images",
    "properties": {
        "images": {"type": "array", "items": IMAGE_SCHEMA},
        "schema": {"type": "string"},
        "first": {"type": "string"},
        "next": {"type": "string"},
    },
    "links": [
        {"href": "{first}", "rel": "first"},
        {"href": "{next}", "rel": "next"},
        {"href": "{schema}", "rel": "describedby"},
    ],
}
