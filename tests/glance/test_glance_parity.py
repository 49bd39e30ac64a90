"""The filter inside a real Glance 33 API, checked against Glance's own notifications.

One Glance (gunicorn, SQLite, filesystem store, no Keystone) runs per module with our
filter in its own paste pipeline; the real ``glance`` client drives an image through
its life (see :mod:`tests.glance.scenario`). For every step, every spec event Glance
emits natively must come from the kit too, in the same order, with the same priority
and equal payload fields (timestamps aside); differences are named and classified by
:mod:`tests.glance.parity`. Where Glance is silent or wrong (aborted downloads, failed
requests) the kit's own image.send / WARN events are checked for being right.

The virtualenv (Glance, python-glanceclient, gunicorn; pinned) is built on first use and
cached. Without PyPI the module is skipped with the reason printed, unless ``CI`` is set:
then it fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .environment import running_glance
from .parity import differences, table, verdict
from .scenario import IMAGE_SIZE, RANGE, SUFFIX, Step, run_scenario

pytestmark = pytest.mark.glance

STEPS = (
    "create",
    "upload",
    "download",
    "ranged download",
    "suffix range",
    "unsatisfiable range",
    "aborted download",
    "update",
    "deactivate",
    "reactivate",
    "reactivate again",
    "upload to active image",
    "delete",
    "create (2nd image)",
    "upload too large",
)


@pytest.fixture(scope="module")
def steps(glance_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Step]:
    work = tmp_path_factory.mktemp("glance")
    with running_glance(glance_venv, work) as glance:
        recorded = run_scenario(glance, work)
    comparison = table(recorded)
    print(f"\n{comparison}\n")
    target = os.environ.get("INSTRUMENT_GLANCE_TABLE")
    if target:
        Path(target).write_text(comparison + "\n")
    by_name = {step.name: step for step in recorded}
    assert tuple(by_name) == STEPS
    return by_name


def _sends(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == "image.send"]


@pytest.mark.parametrize("name", STEPS)
def test_kit_emits_what_glance_emits(steps: dict[str, Step], name: str) -> None:
    step = steps[name]
    codes = differences(step)
    unexplained = [code for code in codes if verdict(code, step) is None]
    assert not unexplained, (
        f"{name}: unexplained differences {unexplained}\n"
        f"Glance: {step.native}\nkit: {step.kit}\nGlance log:\n{step.glance_log[-3000:]}"
    )


#: Steps Glance is silent on: reactivating an active image changes nothing, and Glance
#: saves (and reports) an image only when its status changed.
SILENT = ("reactivate again",)


def test_every_step_was_observed_by_glance_or_the_kit(steps: dict[str, Step]) -> None:
    silent = [name for name, step in steps.items() if not step.native and not step.kit]
    assert silent == list(SILENT)


def test_clients_get_the_image_bytes_unchanged(steps: dict[str, Step]) -> None:
    assert steps["download"].facts["identical"]
    for name in ("ranged download", "suffix range"):
        assert steps[name].facts["status"] == 206
        assert steps[name].facts["identical"], name


@pytest.mark.parametrize(
    ("name", "length"), [("ranged download", RANGE[1] - RANGE[0] + 1), ("suffix range", SUFFIX)]
)
def test_ranged_download_reports_the_range_as_sent(
    steps: dict[str, Step], name: str, length: int
) -> None:
    step = steps[name]
    (kit,) = _sends(step.kit)
    assert (kit["priority"], kit["payload"]["bytes_sent"]) == ("INFO", length)
    (native,) = _sends(step.native)
    assert native["payload"]["bytes_sent"] == length  # Glance 33 counts ranges right too


def test_aborted_download_is_an_error_with_the_partial_count(steps: dict[str, Step]) -> None:
    step = steps["aborted download"]
    assert step.facts["status_line"].endswith("200 OK")
    assert _sends(step.native) == []  # Glance: only a fully drained body notifies
    (kit,) = _sends(step.kit)
    assert kit["priority"] == "ERROR"
    assert step.facts["body_received"] <= kit["payload"]["bytes_sent"] < IMAGE_SIZE


def test_unsatisfiable_range_is_a_warn_send_of_nothing(steps: dict[str, Step]) -> None:
    step = steps["unsatisfiable range"]
    assert step.facts["status"] == 416
    assert step.native == []
    (kit,) = _sends(step.kit)
    assert (kit["priority"], kit["payload"]["bytes_sent"]) == ("WARN", 0)


def test_upload_to_active_image_warns_without_prepare(steps: dict[str, Step]) -> None:
    step = steps["upload to active image"]
    assert step.native == []  # Glance rejects the status change before set_data
    kinds = [(k["event_type"], k["priority"]) for k in step.kit]
    assert kinds == [("image.upload", "WARN")]
    assert isinstance(step.kit[0]["payload"], str)
