"""The cached virtualenvs of Glance and Keystone (pinned), built once.

Without PyPI the tests that need them are skipped with the reason printed, unless ``CI``
is set: then they fail.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from .environment import EnvironmentUnavailable, ensure_venv


def _built(what: str, build: Callable[[], Path]) -> Path:
    try:
        return build()
    except EnvironmentUnavailable as exc:
        reason = f"cannot build the {what} virtualenv: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def glance_venv() -> Path:
    return _built("Glance", ensure_venv)


@pytest.fixture(scope="session")
def keystone_venv() -> Path:
    """Keystone's (see :mod:`tests.glance.keystone`)."""
    from .keystone import ensure_keystone_venv

    return _built("Keystone", ensure_keystone_venv)
