"""The malformed-input corpus through waitress and gunicorn, bare and behind the filter.

Four servers, each its own process on 127.0.0.1 with a free port, started once for the
module: the deterministic example API (:mod:`tests.support.corpus_app`) bare and
filtered (logging strategy to a file), under waitress and under gunicorn. Every case of
:data:`tests.support.malformed.CASES` goes to the four in the same order over a raw
socket. Asserted: each filtered response (status line, headers but Date and Server,
body) is byte for byte the bare one's on the same server; the kit logged no exception;
every notification is strict JSON (``orjson.loads``) of at most
``MAX_NOTIFICATION_BYTES``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from instrument.events import MAX_NOTIFICATION_BYTES

from .servers import ROOT, free_port, stop_process, wait_for_port
from .support.malformed import CASES, exchange

APP = "tests.support.corpus_app:application"
SERVERS = ("waitress", "gunicorn")


@dataclass
class Served:
    port: int
    notifications: Path
    kit_log: Path


def _command(server: str, port: int) -> list[str]:
    if server == "waitress":
        return [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}", APP]
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--timeout", "120", "--log-level", "critical", APP]  # fmt: skip


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """``{"waitress": ..., "waitress+filter": ..., "gunicorn": ..., ...}``, all listening."""
    started: dict[str, Served] = {}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for server in SERVERS:
            for filtered in (False, True):
                name = server + ("+filter" if filtered else "")
                home = tmp_path_factory.mktemp(name.replace("+", "-"))
                served = Served(free_port(), home / "notifications.log", home / "kit.log")
                env = {
                    "IMAGE_API_DATA_DIR": str(home / "data"),
                    "CORPUS_KIT_LOG": str(served.kit_log),
                    "INSTRUMENT_STRATEGY": "logging",
                    "INSTRUMENT_LOG_FILE": str(served.notifications),
                    **({"CORPUS_FILTERED": "1"} if filtered else {}),
                }
                command = _command(server, served.port)
                output = (home / "server.out").open("wb")
                processes.append(
                    subprocess.Popen(
                        command, cwd=ROOT, env={**_env(), **env}, stdout=output, stderr=output
                    )
                )
                started[name] = served
        for served in started.values():
            wait_for_port(served.port, timeout=60)
        yield started
    finally:
        for process in processes:
            stop_process(process)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}


def comparable(response: bytes) -> bytes:
    """The response without the Date and Server headers, the only ones allowed to differ."""
    head, separator, body = response.partition(b"\r\n\r\n")
    lines = [
        line for line in head.split(b"\r\n") if not line.lower().startswith((b"date:", b"server:"))
    ]
    return b"\r\n".join(lines) + separator + body


@pytest.fixture(scope="module")
def answers(servers: dict[str, Served]) -> dict[str, list[bytes]]:
    """Every server's answer to every case, the corpus sent to each in the same order."""
    return {
        name: [exchange(served.port, case) for case in CASES] for name, served in servers.items()
    }


def test_the_corpus_is_the_issue_s() -> None:
    assert len(CASES) >= 69
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("server", SERVERS)
def test_responses_are_the_bare_application_s(server: str, answers: dict[str, list[bytes]]) -> None:
    differing = [
        case.name
        for case, bare, filtered in zip(
            CASES, answers[server], answers[server + "+filter"], strict=True
        )
        if comparable(bare) != comparable(filtered)
    ]
    assert differing == []
    # Only a client that promised a body and went away may get nothing (waitress then
    # drops the request); every other case has an answer to compare.
    unanswered = [case.name for case, bare in zip(CASES, answers[server], strict=True) if not bare]
    assert {case.name for case in CASES if case.half_close} >= set(unanswered)


@pytest.mark.parametrize("server", SERVERS)
def test_notifications_are_bounded_strict_json(
    server: str, servers: dict[str, Served], answers: dict[str, list[bytes]]
) -> None:
    served = servers[server + "+filter"]
    lines = served.notifications.read_bytes().splitlines()
    assert len(lines) > 20  # creates, updates, downloads, failures: the filter was there
    for line in lines:
        assert len(line) <= MAX_NOTIFICATION_BYTES
        assert isinstance(orjson.loads(line), dict)
        # The 10k id's delete fails in the application with the data file's path in
        # its error (File name too long): the payload must not carry the server's path.
        assert str(served.notifications.parent).encode() not in line
        assert b"SECRET" not in line
    assert not servers[server].notifications.exists()


@pytest.mark.parametrize("server", SERVERS)
def test_no_exception_in_the_kit(
    server: str, servers: dict[str, Served], answers: dict[str, list[bytes]]
) -> None:
    log = servers[server + "+filter"].kit_log
    text = log.read_text() if log.exists() else ""
    assert "Traceback" not in text
    assert "failed" not in text
