"""Interoperable image import and image sharing, driven through a real Glance.

Glance needs an identity to import (its task has an owner), so this Glance runs the
``context`` flavour (:mod:`tests.glance.configs`). web-download fetches from an HTTP
server the test runs on 127.0.0.1; copy-image copies to the second store ``fs2``, then to
every store the image is not in yet (``fs3``); one glance-direct import goes to two
stores that must both succeed (``fs`` and ``fs2``: image.activate after the second).
Image members are added and removed with the ``glance`` CLI, accepted and rejected as
the member project (raw HTTP with that project's identity headers).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .environment import Glance
from .scenario import Recorder, Step, _image_id, _ok

MEMBER = "member-project"
IMPORT_SIZE = 1024 * 1024


@contextlib.contextmanager
def file_server(folder: Path) -> Iterator[int]:
    """Serve *folder* on 127.0.0.1 (a free port) for web-download; yields the port."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _as_member(glance: Glance, image_id: str, status: str) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", glance.port, timeout=30)
    try:
        connection.request(
            "PUT",
            f"/v2/images/{image_id}/members/{MEMBER}",
            body=json.dumps({"status": status}),
            headers={
                "Content-Type": "application/json",
                "X-Project-Id": MEMBER,
                "X-User-Id": "member-user",
                "X-Roles": "member,reader",
            },
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        return {"status": response.status, "body": json.loads(response.read())}
    finally:
        connection.close()


def run_import_scenario(glance: Glance, work: Path, port: int) -> list[Step]:
    """Imports (glance-direct, web-download, copy-image, a failing one), then members."""
    (work / "import.bin").write_bytes(os.urandom(IMPORT_SIZE))
    recorder = Recorder(glance)
    image: dict[str, str] = {}

    def via_import(key: str, *how: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            output = glance.glance(
                "image-create-via-import",
                "--name",
                key,
                "--disk-format",
                "raw",
                "--container-format",
                "bare",
                *how,
                timeout=120,
            )
            image[key] = _image_id(_ok(output)["output"])
            return {"output": output}

        return run

    def copy_image(*to: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            how = ("--import-method", "copy-image", *to)
            return _ok(glance.glance("image-import", image["direct"], *how, timeout=120))

        return run

    url = f"http://127.0.0.1:{port}"
    plan: list[tuple[Step, Callable[[], dict[str, Any] | None]]] = [
        (
            Step(
                "import glance-direct",
                "glance image-create-via-import --import-method glance-direct --file (1 MiB)",
                upload=True,
                ends_with=("task.success", 4),
            ),
            via_import(
                "direct", "--import-method", "glance-direct", "--file", str(work / "import.bin")
            ),
        ),
        (
            Step(
                "import web-download",
                "glance image-create-via-import --import-method web-download --uri http://127.0.0.1:…",
                upload=True,
                ends_with=("task.success", 4),
            ),
            via_import("web", "--import-method", "web-download", "--uri", f"{url}/image.raw"),
        ),
        (
            Step(
                "import copy-image",
                "glance image-import --import-method copy-image --stores fs2",
                upload=True,
                ends_with=("task.success", 2),
            ),
            copy_image("--stores", "fs2"),
        ),
        (
            Step(
                "import copy-image to all stores",
                "glance image-import --import-method copy-image --all-stores true",
                upload=True,
                ends_with=("task.success", 2),
            ),
            copy_image("--all-stores", "true"),
        ),
        (
            Step(
                "import to two stores",
                "glance image-create-via-import --import-method glance-direct --stores fs,fs2 "
                "--allow-failure false",
                upload=True,
                ends_with=("task.success", 6),  # with image.create
            ),
            via_import(
                "two",
                "--import-method",
                "glance-direct",
                "--file",
                str(work / "import.bin"),
                "--stores",
                "fs,fs2",
                "--allow-failure",  # the client's default (true) lets the first store activate
                "false",
            ),
        ),
        (
            Step(
                "import failing",
                "glance image-create-via-import --import-method web-download, URL answers 404",
                upload=True,
                kit_only=(("image.upload", "ERROR"),),
                ends_with=("task.failure", 2),
            ),
            via_import("failing", "--import-method", "web-download", "--uri", f"{url}/missing.raw"),
        ),
        (
            Step("member add", f"glance member-create IMAGE {MEMBER}"),
            lambda: _ok(glance.glance("member-create", image["direct"], MEMBER)),
        ),
        (
            Step("member accept", "PUT .../members/{member} {status: accepted}, as the member"),
            lambda: _as_member(glance, image["direct"], "accepted"),
        ),
        (
            Step("member reject", "PUT .../members/{member} {status: rejected}, as the member"),
            lambda: _as_member(glance, image["direct"], "rejected"),
        ),
        (
            Step("member remove", f"glance member-delete IMAGE {MEMBER}"),
            lambda: _ok(glance.glance("member-delete", image["direct"], MEMBER)),
        ),
    ]
    for step, action in plan:
        recorder.record(step, action)
    return recorder.steps
