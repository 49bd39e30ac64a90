"""The Glance virtualenv (glance, python-glanceclient, gunicorn; pinned), built once and cached.

Without PyPI the tests that need it are skipped with the reason printed, unless ``CI``
is set: then they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .environment import EnvironmentUnavailable, ensure_venv


@pytest.fixture(scope="session")
def glance_venv() -> Path:
    try:
        return ensure_venv()
    except EnvironmentUnavailable as exc:
        reason = f"cannot build the Glance virtualenv: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
