"""The outbox keeps payloads private: files 0600, directories it creates 0700 (issue 15)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from instrument.delivery._outbox import Outbox


def test_journal_files_are_0600_in_0700_directories_even_with_a_lax_umask(
    tmp_path: Path,
) -> None:
    root = tmp_path / "made-by-the-kit" / "outbox"
    old = os.umask(0o022)
    try:
        box = Outbox(str(root), "box")
        box.open()
        box.append(b'{"a": 1}')
        try:
            modes = {
                path: stat.S_IMODE(path.stat().st_mode)
                for path in (tmp_path / "made-by-the-kit").rglob("*")
            }
        finally:
            box.close(confirmed=0)
    finally:
        os.umask(old)
    files = {path: mode for path, mode in modes.items() if path.is_file()}
    folders = {path: mode for path, mode in modes.items() if path.is_dir()}
    assert files and set(files.values()) == {0o600}, files
    assert folders and set(folders.values()) == {0o700}, folders
    assert stat.S_IMODE((tmp_path / "made-by-the-kit").stat().st_mode) == 0o700
