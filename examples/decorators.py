"""Instrument your own image handlers with decorators; print each notification.

Run: python examples/decorators.py
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from webob import Request

from instrument import Notifier
from instrument.decorators import Instrumentation
from instrument.strategies.memory import MemoryStrategy

memory = MemoryStrategy()
on = Instrumentation(Notifier(memory, publisher_id="decorators-example"))
images: dict[str, dict[str, Any]] = {}
blobs: dict[str, bytes] = {}


@on.create
def create_image(name: str) -> dict[str, Any]:
    image_id = str(uuid.uuid4())
    images[image_id] = {
        "id": image_id,
        "name": name,
        "status": "queued",
        "owner": "demo",
        "locations": ["swift://user:secret@store/x"],
    }  # never leaves the process
    return images[image_id]


@on.upload(image="image_id", lookup=images.get)
def upload_image(image_id: str, data: bytes) -> None:
    blobs[image_id] = data
    images[image_id].update(status="active", size=len(data))


@on.send(image="image_id", lookup=images.get)
def download_image(request: Request, image_id: str) -> Iterator[bytes]:
    data = blobs[image_id]
    for start in range(0, len(data), 4):
        yield data[start : start + 4]


@on.update(image="image_id", lookup=images.get)
def rename_image(image_id: str, name: str) -> None:
    if name == "forbidden":
        raise PermissionError("names are checked")
    images[image_id]["name"] = name


@on.delete(image="image_id", lookup=images.get)
def delete_image(image_id: str) -> None:
    del images[image_id]


def main() -> None:
    image_id = create_image("cirros")["id"]
    upload_image(image_id, b"0123456789")
    request = Request.blank("/", remote_addr="192.0.2.7", headers={"X-User-Id": "alice"})
    print(b"".join(download_image(request, image_id)))
    rename_image(image_id, "cirros-0.6")
    try:
        rename_image(image_id, "forbidden")
    except PermissionError as exc:
        print("handler raised, unchanged:", repr(exc))
    delete_image(image_id)
    for notification in memory.notifications:
        payload = json.dumps(notification.payload)
        print(f"{notification.priority:5} {notification.event_type:14} {payload}")


if __name__ == "__main__":
    main()
