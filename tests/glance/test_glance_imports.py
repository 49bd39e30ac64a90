"""Image import and image members: the kit's notifications against Glance 33's own.

The same comparison as :mod:`tests.glance.test_glance_parity` (every difference named and
classified by :mod:`tests.glance.parity`), for the flows of today's clients: the three
import methods and a failing import (Glance imports in a background task after answering
``202``: the kit learns the end off the request path), and sharing an image.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .configs import Setup
from .environment import running_glance
from .import_scenario import IMPORT_SIZE, file_server, run_import_scenario
from .parity import differences, table, verdict
from .scenario import Step

pytestmark = pytest.mark.glance

STEPS = (
    "import glance-direct",
    "import web-download",
    "import copy-image",
    "import copy-image to all stores",
    "import to two stores",
    "import failing",
    "member add",
    "member accept",
    "member reject",
    "member remove",
)


@pytest.fixture(scope="module")
def steps(glance_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Step]:
    work = tmp_path_factory.mktemp("glance-import")
    served = work / "served"
    served.mkdir()
    (served / "image.raw").write_bytes(os.urandom(IMPORT_SIZE))
    with file_server(served) as port:
        setup = Setup(flavor="context", import_ports=(port,))
        with running_glance(glance_venv, work, setup) as glance:
            recorded = run_import_scenario(glance, work, port)
    comparison = table(recorded)
    print(f"\n{comparison}\n")
    target = os.environ.get("INSTRUMENT_GLANCE_IMPORT_TABLE")
    if target:
        Path(target).write_text(comparison + "\n")
    by_name = {step.name: step for step in recorded}
    assert tuple(by_name) == STEPS
    return by_name


@pytest.mark.parametrize("name", STEPS)
def test_kit_emits_what_glance_emits(steps: dict[str, Step], name: str) -> None:
    step = steps[name]
    unexplained = [code for code in differences(step) if verdict(code, step) is None]
    assert not unexplained, (
        f"{name}: unexplained differences {unexplained}\n"
        f"Glance: {step.native}\nkit: {step.kit}\nGlance log:\n{step.glance_log[-3000:]}"
    )


def _kinds(events: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(e["event_type"], e["priority"]) for e in events if e["event_type"] != "image.create"]


def test_an_import_ends_with_prepare_upload_activate_per_store(steps: dict[str, Step]) -> None:
    done = [("image.prepare", "INFO"), ("image.upload", "INFO"), ("image.activate", "INFO")]
    assert _kinds(steps["import glance-direct"].kit) == done
    assert _kinds(steps["import web-download"].kit) == done
    copy = steps["import copy-image"].kit
    assert _kinds(copy) == done[:2]  # a copy adds a store to an active image
    assert copy[0]["payload"]["backend"] == "fs2"
    # to all stores: only the one the image was not in yet
    everywhere = steps["import copy-image to all stores"].kit
    assert [(e["event_type"], e["payload"].get("backend")) for e in everywhere] == [
        ("image.prepare", "fs3"),
        ("image.upload", None),
    ]
    # two stores, each required: the image is active once the second has it
    two = [e for e in steps["import to two stores"].kit if e["event_type"] != "image.create"]
    assert [(e["event_type"], e["payload"].get("status")) for e in two] == [
        ("image.prepare", "importing"),
        ("image.upload", "importing"),
        ("image.prepare", "importing"),
        ("image.upload", "active"),
        ("image.activate", "active"),
    ]


def test_a_failed_import_is_an_error_upload(steps: dict[str, Step]) -> None:
    step = steps["import failing"]
    assert not any(n["event_type"] == "image.upload" for n in step.native)  # Glance: task.failure
    (error,) = [k for k in step.kit if k["event_type"] == "image.upload"]
    assert error["priority"] == "ERROR" and "web-download" in error["payload"]
