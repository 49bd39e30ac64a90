"""Emit an image's lifecycle through the logging strategy and print each notification.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import logging
import sys

from instrument import Notifier, image_payload, send_payload


def main() -> None:
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)-7s %(name)s %(message)s"
    )
    notifier = Notifier.from_config(notifier_strategy="logging", publisher_id="quickstart")
    image = {
        "id": "8a3e2f4c-5b21-4a8f-9d8e-0c1f2a3b4c5d",
        "name": "cirros",
        "status": "queued",
        "locations": ["file:///secret/path"],  # never leaves the process
    }
    notifier.info("image.create", image_payload(image))
    notifier.info("image.prepare", image_payload(image))
    image.update(status="active", size=13_287_936)
    notifier.info("image.upload", image_payload(image))
    notifier.info("image.activate", image_payload(image))
    notifier.info(
        "image.send",
        send_payload(
            image_id=image["id"],
            owner_id="demo",
            receiver_tenant_id="demo",
            receiver_user_id="alice",
            destination_ip="127.0.0.1",
            bytes_sent=13_287_936,
        ),
    )
    notifier.info("image.update", image_payload({**image, "name": "cirros-0.6"}))
    notifier.info("image.delete", image_payload({**image, "status": "deleted"}))
    notifier.close()


if __name__ == "__main__":
    main()
