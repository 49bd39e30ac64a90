"""The runnable examples run, and print what the README says they print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(script: str) -> str:
    result = subprocess.run(
        [sys.executable, script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quickstart_prints_the_lifecycle_without_locations() -> None:
    lines = run("examples/quickstart.py").splitlines()
    notes = [json.loads(line.split(None, 2)[2]) for line in lines]
    assert [n["event_type"] for n in notes] == [
        "image.create",
        "image.prepare",
        "image.upload",
        "image.activate",
        "image.send",
        "image.update",
        "image.delete",
    ]
    assert all("locations" not in n["payload"] for n in notes)


def test_iterators_example_counts_a_complete_and_an_abandoned_download() -> None:
    out = run("examples/iterators.py").splitlines()
    assert out[0].startswith("INFO image.send") and "'bytes_sent': 1000000" in out[0]
    assert out[1].startswith("ERROR image.send") and "'bytes_sent': 262144" in out[1]


def test_paste_glance_ini_filter_loads_and_checks() -> None:
    from paste.deploy import loadfilter

    from instrument.middleware import NotificationMiddleware

    make_filter = loadfilter(
        f"config:{ROOT / 'examples' / 'paste_glance.ini'}", name="notifications"
    )
    wrapped = make_filter(lambda environ, start_response: [])
    assert isinstance(wrapped, NotificationMiddleware)
    assert [s.name for s in wrapped.notifier.strategies] == ["logging"]
    assert wrapped.notifier.publisher_id == "glance-api-1"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "instrument.cli",
            "check",
            "--paste-ini",
            "examples/paste_glance.ini",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.startswith("OK: test notification"), (
        result.stderr
    )
