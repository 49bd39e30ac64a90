"""What a whole image lifecycle emits: create, upload, download, ranged and aborted
downloads, update, delete (the demo's and the real-server tests' sequence)."""

from __future__ import annotations

LIFECYCLE_EVENTS = [
    ("image.create", "INFO"),
    ("image.prepare", "INFO"),
    ("image.upload", "INFO"),
    ("image.activate", "INFO"),
    ("image.send", "INFO"),
    ("image.send", "INFO"),
    ("image.send", "ERROR"),
    ("image.update", "INFO"),
    ("image.delete", "INFO"),
]
