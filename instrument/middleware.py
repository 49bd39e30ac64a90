"""(in progress) The WSGI middleware."""

from __future__ import annotations

from .options import Option

MIDDLEWARE_OPTIONS: tuple[Option, ...] = ()
