"""The filter configured where Glance is configured: only ``oslo_config_project = glance``.

The paste section names no broker. ``glance-api.conf`` has ``[DEFAULT] transport_url``
pointing at a real RabbitMQ node (a vhost of the session's node) and no
``[oslo_messaging_notifications] transport_url`` (Glance's own notifications stay on its
``log`` driver); the kit finds the file in ``$OS_GLANCE_CONFIG_DIR``, as Glance does, and
publishes there. What the node received is read back with a plain kombu consumer.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.consume import consume
from tests.support.rabbitmq import HOST, PASSWORD, USER, RabbitNode

from .configs import Setup
from .environment import read_json_lines, running_glance
from .scenario import _image_id, _ok

pytestmark = [pytest.mark.glance, pytest.mark.broker]

ID_KEYS = ("id", "image_id")  # image.send names the image image_id
EXPECTED = ("image.create", "image.prepare", "image.upload", "image.activate", "image.send")


@pytest.fixture(scope="module")
def published(
    glance_venv: Path, rabbit_node: RabbitNode, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    vhost = f"glance-oslo-{uuid.uuid4().hex[:8]}"
    rabbit_node.add_vhost(vhost)
    work = tmp_path_factory.mktemp("glance-oslo")
    (work / "image.bin").write_bytes(os.urandom(64 * 1024))
    setup = Setup(
        filter_options=("oslo_config_project = glance",),
        transport_url=f"rabbit://{USER}:{PASSWORD}@{HOST}:{rabbit_node.port}/{vhost}",
    )
    with running_glance(glance_venv, work, setup) as glance:
        created = glance.glance(
            "image-create", "--name", "oslo", "--disk-format", "raw",
            "--container-format", "bare", "--file", str(work / "image.bin"),
        )  # fmt: skip
        image_id = _image_id(_ok(created)["output"])
        _ok(glance.glance("image-download", "--file", str(work / "out.bin"), image_id))
        url = f"amqp://{USER}:{PASSWORD}@{HOST}:{rabbit_node.port}/{vhost}"
        messages = consume(url, "notifications", expect=len(EXPECTED), timeout=60)
        native = read_json_lines(glance.native_log)
        kit_file = glance.kit_log.exists()
    return {"id": image_id, "messages": messages, "native": native, "kit_file": kit_file}


def test_the_kit_publishes_to_the_node_glance_api_conf_names(published: dict[str, Any]) -> None:
    bodies = [json.loads(m["body"]) for m in published["messages"]]
    ours = [b for b in bodies if published["id"] in (b["payload"].get(k) for k in ID_KEYS)]
    assert tuple(b["event_type"] for b in ours) == EXPECTED
    assert {m["routing_key"] for m in published["messages"]} == {"notifications.info"}
    assert not published["kit_file"]  # the paste section named no other strategy


def test_glance_itself_still_notifies_through_its_own_driver(published: dict[str, Any]) -> None:
    created = [n for n in published["native"] if n["event_type"] == "image.create"]
    assert [n["payload"]["id"] for n in created] == [published["id"]]
