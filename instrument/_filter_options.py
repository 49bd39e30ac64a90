"""The filter's own options, declared once, and the middleware's keyword arguments from them.

Split from :mod:`instrument.middleware` so that the filter reads as the filter: this
module declares what the filter (and, through it, the import follower and the
service-configuration reader) accepts; :func:`instrument.middleware.known_options` adds
the core's and the strategies' options for the README's reference and the warnings
about unknown names.
"""

from __future__ import annotations

from typing import Any, Final

from ._import_member import IMPORT_OPTIONS, follower_settings
from .config import Settings
from .options import Option, boolean, integer, number
from .oslo import OSLO_OPTIONS
from .routes import RouteTable, parse_routes

__all__ = [
    "LOOKUP_OPTION",
    "MIDDLEWARE_OPTIONS",
    "ROUTES_OPTION",
    "SEEN_AGE_OPTION",
    "SEEN_OPTION",
    "filter_options",
]

ROUTES_OPTION: Final = Option(
    "routes",
    (),
    "Extra or overriding routes, one per line or ';'-separated: "
    "'METHOD /path/{id}/tail KIND [v1|v2]' (see instrument.routes).",
    parse_routes,
)
LOOKUP_OPTION: Final = Option(
    "image_lookup",
    True,
    "Ask the application for image metadata with an internal GET when a response "
    "does not carry it (v2 upload, delete, actions, downloads).",
    boolean,
)
SEEN_OPTION: Final = Option(
    "seen_images",
    1024,
    "How many images seen in responses the filter remembers, so that downloads of "
    "active images and deletes need no metadata lookup (see instrument._seen); "
    "0 asks the application every time.",
    integer(0),
)
SEEN_AGE_OPTION: Final = Option(
    "seen_images_max_age",
    60.0,
    "Seconds a remembered image stands for the image before the application is asked "
    "again: a change made through another worker or API node (an owner set by an "
    "administrator, a rename) shows in notifications after at most this long.",
    number(0.0),
)
MIDDLEWARE_OPTIONS: Final = (
    ROUTES_OPTION,
    LOOKUP_OPTION,
    SEEN_OPTION,
    SEEN_AGE_OPTION,
    *IMPORT_OPTIONS,
    *OSLO_OPTIONS,
)


def filter_options(settings: Settings) -> dict[str, Any]:
    """The middleware's own keyword arguments, read (and so validated) from *settings*."""
    return {
        "routes": RouteTable(settings.get(ROUTES_OPTION)),
        "image_lookup": settings.get(LOOKUP_OPTION),
        "seen_images": settings.get(SEEN_OPTION),
        "seen_max_age": settings.get(SEEN_AGE_OPTION),
        "imports": follower_settings(settings),
    }
