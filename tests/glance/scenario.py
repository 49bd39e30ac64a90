"""Drive a real Glance through an image's whole life and record both notification streams.

Each :class:`Step` is one client action (the real ``glance`` CLI where it can do it,
raw HTTP for ranges and an aborted download). After each step the recorder waits until
both notification files have been quiet for a moment and keeps the new lines: Glance's
own (oslo.messaging ``log`` driver) and the kit's (``logging`` strategy, ``log_file``).
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configs import IMAGE_SIZE_CAP
from .environment import Glance, read_json_lines

SPEC_EVENTS = frozenset(
    {
        "image.create",
        "image.prepare",
        "image.upload",
        "image.activate",
        "image.send",
        "image.update",
        "image.delete",
        "image.member.create",
        "image.member.update",
        "image.member.delete",
    }
)
IMAGE_SIZE = 8 * 1024 * 1024
TOO_BIG = IMAGE_SIZE_CAP + 1024 * 1024
RANGE = (1000, 1999)
SUFFIX = 500
QUIET = 0.4


@dataclass
class Step:
    """One client action and what each side emitted while it ran."""

    name: str
    action: str
    #: An upload request: Glance's own status writes (image.update) are expected here.
    upload: bool = False
    #: (event_type, priority) the kit emits where Glance is silent, by design.
    kit_only: tuple[tuple[str, str], ...] = ()
    native: list[dict[str, Any]] = field(default_factory=list)
    kit: list[dict[str, Any]] = field(default_factory=list)
    glance_log: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    #: Work that ends after the client's request (an import): wait until Glance said this
    #: event (``task.success``, ``task.failure``) and the kit this many events.
    ends_with: tuple[str, int] | None = None


class Recorder:
    """Cuts both notification streams (and Glance's log) into per-step slices."""

    def __init__(self, glance: Glance) -> None:
        self.glance = glance
        self.steps: list[Step] = []
        self._seen = (0, 0, 0)

    def _sizes(self) -> tuple[int, int, int]:
        paths = (self.glance.native_log, self.glance.kit_log, self.glance.glance_log)
        return tuple(p.stat().st_size if p.exists() else 0 for p in paths)  # type: ignore[return-value]

    def _settle(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        last, quiet_since = self._sizes(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self._sizes()
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= QUIET:
                return

    def _ended(self, step: Step, timeout: float = 90.0) -> None:
        """Wait (a condition, not a time) until both sides reported the step's end."""
        if step.ends_with is None:
            return
        deadline = time.monotonic() + timeout
        native_event, kit_wanted = step.ends_with
        while time.monotonic() < deadline:
            native = read_json_lines(self.glance.native_log)[self._seen[0] :]
            kit = read_json_lines(self.glance.kit_log)[self._seen[1] :]
            said = any(n.get("event_type") == native_event for n in native)
            if said and len(kit) >= kit_wanted:
                return
            time.sleep(0.2)

    def record(self, step: Step, run: Callable[[], dict[str, Any] | None]) -> Step:
        facts = run()
        self._ended(step)
        self._settle()
        native = read_json_lines(self.glance.native_log)
        kit = read_json_lines(self.glance.kit_log)
        log = self.glance.glance_log.read_text() if self.glance.glance_log.exists() else ""
        seen_native, seen_kit, seen_log = self._seen
        step.native = [n for n in native[seen_native:] if n.get("event_type") in SPEC_EVENTS]
        step.kit = kit[seen_kit:]
        step.glance_log = log[seen_log:]
        step.facts = facts or {}
        self._seen = (len(native), len(kit), len(log))
        self.steps.append(step)
        return step


def _image_id(output: str) -> str:
    found = re.search(r"^\|\s*id\s*\|\s*([0-9a-f-]{36})\s*\|", output, re.MULTILINE)
    assert found, f"no image id in glance output:\n{output}"
    return found[1]


def _exit_code(output: str) -> int:
    return int(output.split("\n", 1)[0].removeprefix("exit="))


def _upload(glance: Glance, path: Path, image_id: str) -> dict[str, Any]:
    return _ok(glance.glance("image-upload", "--file", str(path), image_id))


def _ok(output: str) -> dict[str, Any]:
    assert _exit_code(output) == 0, output
    return {"output": output}


def _ranged(glance: Glance, image_id: str, header: str) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", glance.port, timeout=30)
    try:
        headers = {"Range": header, "X-Auth-Token": glance.env["OS_AUTH_TOKEN"]}
        connection.request("GET", f"/v2/images/{image_id}/file", headers=headers)
        response = connection.getresponse()
        body = response.read()
        return {"status": response.status, "body": body, "headers": dict(response.getheaders())}
    finally:
        connection.close()


def _aborted(glance: Glance, image_id: str, read_at_least: int = 192 * 1024) -> dict[str, Any]:
    """Read the start of a download, then close the socket with data still unread."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    client.connect(("127.0.0.1", glance.port))
    received = b""
    try:
        token = glance.env["OS_AUTH_TOKEN"]
        request = (
            f"GET /v2/images/{image_id}/file HTTP/1.1\r\nHost: glance\r\n"
            f"X-Auth-Token: {token}\r\n\r\n"
        )
        client.sendall(request.encode())
        while len(received) < read_at_least:
            chunk = client.recv(65536)
            if not chunk:
                break
            received += chunk
    finally:
        client.close()  # unread data: the kernel answers further writes with RST
    head, _, body = received.partition(b"\r\n\r\n")
    return {"status_line": head.split(b"\r\n", 1)[0].decode(), "body_received": len(body)}


def run_scenario(glance: Glance, work: Path) -> list[Step]:
    """The image lifecycle, step by step; returns the recorded steps."""
    data = os.urandom(IMAGE_SIZE)
    (work / "image.bin").write_bytes(data)
    (work / "too-big.bin").write_bytes(os.urandom(TOO_BIG))
    recorder = Recorder(glance)
    image: dict[str, str] = {}

    def create() -> dict[str, Any]:
        output = glance.glance(
            "image-create",
            "--name",
            "parity",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--visibility",
            "private",
            "--owner",
            "parity-project",
            "--property",
            "os_distro=debian",
        )
        image["id"] = _image_id(_ok(output)["output"])
        return {"output": output}

    def download() -> dict[str, Any]:
        target = work / "downloaded.bin"
        facts = _ok(glance.glance("image-download", "--file", str(target), image["id"]))
        facts["identical"] = target.read_bytes() == data
        return facts

    def ranged() -> dict[str, Any]:
        facts = _ranged(glance, image["id"], f"bytes={RANGE[0]}-{RANGE[1]}")
        facts["identical"] = facts.pop("body") == data[RANGE[0] : RANGE[1] + 1]
        return facts

    def suffix() -> dict[str, Any]:
        facts = _ranged(glance, image["id"], f"bytes=-{SUFFIX}")
        facts["identical"] = facts.pop("body") == data[-SUFFIX:]
        return facts

    def failed_upload() -> dict[str, Any]:
        output = glance.glance("image-upload", "--file", str(work / "image.bin"), image["id"])
        assert _exit_code(output) != 0 and "409" in output, output
        return {"output": output}

    def create_big() -> dict[str, Any]:
        output = glance.glance(
            "image-create",
            "--name",
            "too-big",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
        )
        image["big"] = _image_id(_ok(output)["output"])
        return {"output": output}

    def too_big() -> dict[str, Any]:
        output = glance.glance("image-upload", "--file", str(work / "too-big.bin"), image["big"])
        assert _exit_code(output) != 0 and "413" in output, output
        return {"output": output}

    plan: list[tuple[Step, Callable[[], dict[str, Any] | None]]] = [
        (Step("create", "glance image-create --name parity ... --owner --property"), create),
        (
            Step("upload", "glance image-upload --file image.bin (8 MiB)", upload=True),
            lambda: _upload(glance, work / "image.bin", image["id"]),
        ),
        (Step("download", "glance image-download"), download),
        (Step("ranged download", f"GET .../file, Range: bytes={RANGE[0]}-{RANGE[1]}"), ranged),
        (Step("suffix range", f"GET .../file, Range: bytes=-{SUFFIX}"), suffix),
        (
            Step(
                "unsatisfiable range",
                "GET .../file, Range: bytes=99999999- (416)",
                kit_only=(("image.send", "WARN"),),
            ),
            lambda: _ranged(glance, image["id"], "bytes=99999999-"),
        ),
        (
            Step(
                "aborted download",
                "GET .../file, client closes after ~192 KiB",
                kit_only=(("image.send", "ERROR"),),
            ),
            lambda: _aborted(glance, image["id"]),
        ),
        (
            Step("update", "glance image-update --name parity-renamed --property os_version=12"),
            lambda: _ok(
                glance.glance(
                    "image-update",
                    "--name",
                    "parity-renamed",
                    "--property",
                    "os_version=12",
                    image["id"],
                )
            ),
        ),
        (
            Step("deactivate", "glance image-deactivate"),
            lambda: _ok(glance.glance("image-deactivate", image["id"])),
        ),
        (
            Step("reactivate", "glance image-reactivate"),
            lambda: _ok(glance.glance("image-reactivate", image["id"])),
        ),
        (
            Step("reactivate again", "glance image-reactivate of the active image"),
            lambda: _ok(glance.glance("image-reactivate", image["id"])),
        ),
        (
            Step(
                "upload to active image",
                "glance image-upload to the active image (409)",
                upload=True,
                kit_only=(("image.upload", "WARN"),),
            ),
            failed_upload,
        ),
        (
            Step("delete", "glance image-delete"),
            lambda: _ok(glance.glance("image-delete", image["id"])),
        ),
        (Step("create (2nd image)", "glance image-create --name too-big"), create_big),
        (
            Step(
                "upload too large",
                f"glance image-upload of {TOO_BIG >> 20} MiB, "
                f"image_size_cap {IMAGE_SIZE_CAP >> 20} MiB (413)",
                upload=True,
            ),
            too_big,
        ),
    ]
    for step, action in plan:
        recorder.record(step, action)
    return recorder.steps
