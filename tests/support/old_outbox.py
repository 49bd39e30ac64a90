"""An outbox file as the earlier version (SQLite, before the journals) left it."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from instrument.events import Notification

__all__ = ["OLD_SCHEMA", "old_outbox"]

# The earlier version's schema (instrument/_outbox.py before the journals), verbatim.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_owner ON outbox (channel, owner, id);
"""


def old_outbox(path: Path, rows: dict[str, list[Notification]]) -> None:
    """An outbox file as the earlier version left it: WAL, rows of two dead owners."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OLD_SCHEMA)
    for channel, notes in rows.items():
        for index, note in enumerate(notes):
            owner = f"{4000 + index % 2}:1234:{uuid.uuid4().hex}"
            db.execute(
                "INSERT INTO outbox (channel, owner, created, body) VALUES (?, ?, 0, ?)",
                (channel, owner, note.to_json()),
            )
    db.close()
