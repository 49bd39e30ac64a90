"""The real python-glanceclient against the example image API behind the middleware."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from examples.image_api import ImageAPI
from instrument import Notifier
from instrument.middleware import NotificationMiddleware
from instrument.testing import CapturedNotifications

from ..servers import waitress_server
from .environment import close_stdin

pytestmark = pytest.mark.glance


@pytest.fixture(scope="module")
def glance_cli(glance_venv: Path) -> Path:
    return glance_venv / "bin" / "glance"


def run(cli: Path, port: int, *args: str) -> str:
    env = {**os.environ, "OS_IMAGE_URL": f"http://127.0.0.1:{port}", "OS_AUTH_TOKEN": "demo"}
    done = subprocess.run(
        [str(cli), "--os-image-api-version", "2", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=close_stdin,  # glance image-create uploads a stdin that is not a tty
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"glance {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_glanceclient_session_against_the_example_api(
    glance_cli: Path, tmp_path: Path, notifications: CapturedNotifications
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "image.raw").write_bytes(data)
    app = NotificationMiddleware(ImageAPI(tmp_path / "store"), Notifier())
    with waitress_server(app) as port:
        created = run(
            glance_cli,
            port,
            "image-create",
            "--name",
            "cirros",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
        )
        image_id = re.search(r"\|\s*id\s*\|\s*(\S+)\s*\|", created)[1]  # type: ignore[index]
        run(glance_cli, port, "image-upload", "--file", str(tmp_path / "image.raw"), image_id)
        run(glance_cli, port, "image-download", "--file", str(tmp_path / "out.raw"), image_id)
        updated = run(glance_cli, port, "image-update", "--name", "cirros-2", image_id)
        listed = run(glance_cli, port, "image-list")
        run(glance_cli, port, "image-delete", image_id)
        assert notifications.wait_for(7, timeout=10)
    assert (tmp_path / "out.raw").read_bytes() == data
    assert "cirros-2" in updated and image_id in listed
    assert notifications.events == [
        ("image.create", "INFO"),
        ("image.prepare", "INFO"),
        ("image.upload", "INFO"),
        ("image.activate", "INFO"),
        ("image.send", "INFO"),
        ("image.update", "INFO"),
        ("image.delete", "INFO"),
    ]
    assert notifications.payloads("image.send")[0]["bytes_sent"] == len(data)
    assert notifications.payloads("image.update")[0]["name"] == "cirros-2"
