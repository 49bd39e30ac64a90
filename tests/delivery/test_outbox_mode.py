"""The outbox keeps payloads private: files 0600, directories it creates 0700 (issue 15)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from instrument.delivery._outbox import Outbox


def test_outbox_files_are_0600_in_a_0700_directory_even_with_a_lax_umask(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "made-by-the-kit"
    path = directory / "outbox.sqlite"
    old = os.umask(0o022)
    try:
        box = Outbox(str(path), "box")
        box.add(['{"a": 1}'])  # a write: the -wal and -shm files exist now
        try:
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
        finally:
            box.close()
    finally:
        os.umask(old)
    assert {"outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
