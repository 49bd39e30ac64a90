"""The ``instrument`` command: ``demo``, ``listen`` and ``check`` (see :mod:`.main`)."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
