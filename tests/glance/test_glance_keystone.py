"""The parity table again in Glance's ``keystone`` flavour, with a real Keystone and tokens.

Glance's pipeline is ``... authtoken context notifications rootapp``: keystonemiddleware
validates a real token (Keystone 30, SQLite, bootstrapped per run, see
:mod:`tests.glance.keystone`) and Glance's ``context`` builds the request context the kit
reads. Every step of :mod:`tests.glance.test_glance_parity` is compared with Glance's own
notifications as there; image.send's ``receiver_tenant_id``/``receiver_user_id`` must be
the downloading user's project and user, as Keystone issued them, and equal Glance's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .configs import Setup
from .environment import running_glance
from .keystone import Token, running_keystone
from .parity import assert_explained, published_table
from .scenario import Step, run_scenario
from .test_glance_parity import STEPS

pytestmark = pytest.mark.glance


@pytest.fixture(scope="module")
def recorded(
    glance_venv: Path, keystone_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Step], Token]:
    work = tmp_path_factory.mktemp("glance-keystone")
    with running_keystone(keystone_venv, work / "keystone") as keystone:
        token = keystone.token()
        setup = Setup(flavor="keystone", token=token.id, extra_conf=keystone.authtoken_conf())
        with running_glance(glance_venv, work, setup) as glance:
            steps = run_scenario(glance, work)
    by_name = published_table(steps, "INSTRUMENT_GLANCE_KEYSTONE_TABLE")
    assert tuple(by_name) == STEPS
    return by_name, token


@pytest.mark.parametrize("name", STEPS)
def test_kit_emits_what_glance_emits(recorded: tuple[dict[str, Step], Token], name: str) -> None:
    assert_explained(recorded[0][name])


def _receivers(events: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [
        (e["payload"]["receiver_tenant_id"], e["payload"]["receiver_user_id"])
        for e in events
        if e["event_type"] == "image.send" and e["priority"] == "INFO"
    ]


def test_receivers_are_the_downloading_users_project_and_user(
    recorded: tuple[dict[str, Step], Token],
) -> None:
    steps, token = recorded
    download = steps["download"]
    assert _receivers(download.kit) == [(token.project_id, token.user_id)]
    assert _receivers(download.native) == _receivers(download.kit)
