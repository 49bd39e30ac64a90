"""`import instrument` works with only the core dependencies; extras fail at start-up, clearly.

Builds a virtualenv (cached under ~/.cache) holding wrapt, WebOb, PasteDeploy and
waitress only, installs the kit into it without dependencies, and checks that the
package imports, the core strategies work, and the broker strategies say which extra
to install instead of failing at import.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import importlib.util, instrument
from instrument import ConfigError, Notifier
assert importlib.util.find_spec("kombu") is None and importlib.util.find_spec("proton") is None
assert importlib.util.find_spec("orjson") is None
from instrument.images import image_from_body
big = 12345678901234567890123  # beyond 64 bits: orjson would make it a float
assert image_from_body(b'{"id": "1", "size": %d}' % big)["size"] == big
assert image_from_body(b'{"id": ') is None
Notifier.from_config(strategy="logging,memory").info("image.create", {"id": "1"})
for strategy, extra in (("rabbit", "instrument[rabbit]"), ("qpid", "instrument[qpid]")):
    try:
        Notifier.from_config(strategy=strategy)
    except ConfigError as exc:
        assert extra in str(exc), str(exc)
    else:
        raise AssertionError(strategy + " without its client must be a ConfigError")
print("core-only OK")
"""


def core_venv() -> Path:
    dependencies = sorted(r for r in requires("instrument") or [] if "extra ==" not in r)
    key = hashlib.sha256(f"{sys.version}{dependencies}".encode()).hexdigest()[:12]
    venv = Path.home() / ".cache" / f"instrument-core-venv-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        build = ["setuptools>=64", "wheel"]  # to install the kit itself without isolation
        done = subprocess.run(
            [*pip, *dependencies, *build], capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            reason = f"cannot install the core dependencies: {done.stderr[-500:]}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
        (venv / ".complete").touch()
    return python


def test_import_instrument_with_only_the_core_dependencies(tmp_path: Path) -> None:
    python = core_venv()
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--force-reinstall",
            "--no-build-isolation",
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    done = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "core-only OK"
