"""The image API route table: which lifecycle events a request means.

A request is matched on its method and ``PATH_INFO``. Any prefix before the version
segment is accepted (an API mounted under ``/image``), as are trailing slashes and
minor-version aliases (``/v2.1/images``). A path without ``/images`` is rejected by one
substring test, so requests that are not image requests cost next to nothing.

Each route has a *kind* that says what the middleware does:

================  =============================================================
kind              events on success (in order)
================  =============================================================
create            image.create
create_with_data  image.create, and when the request carries data,
                  image.prepare, image.upload, image.activate (v1 ``POST``)
update            image.update
update_with_data  image.update, and with data image.prepare (before the data is
                  passed on), image.upload, image.activate first (v1 ``PUT``)
status_action     image.update when the image's status changed (deactivate,
                  reactivate: the image is looked up before; Glance sends nothing for
                  an action that changed no status)
upload            image.prepare (before), image.upload, image.activate (when the
                  image became active)
delete            image.delete
send              image.send (counted while the body streams)
stage             nothing: the data waits in the staging area (failures: image.upload)
import            nothing at once (202); image.prepare, image.upload, image.activate per
                  store when the import ends, or an ERROR image.upload
                  (see :mod:`instrument._imports`)
member_create     image.member.create (``POST .../members``)
member_update     image.member.update (``PUT .../members/{member}``)
member_delete     image.member.delete (``DELETE .../members/{member}``)
ignore            nothing (to switch a built-in route off)
================  =============================================================

Operators add or override routes with the ``routes`` option, one per line (or
separated by ``;``)::

    routes =
        PUT /v3/images/{id}/file upload
        POST /v3/artifacts create

Configured routes are tried before the built-in ones.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from .exceptions import ConfigError

__all__ = [
    "KINDS",
    "Match",
    "Route",
    "RouteTable",
    "carries_data",
    "created_image_id",
    "parse_routes",
]

KINDS: Final = (
    "create",
    "create_with_data",
    "update",
    "update_with_data",
    "status_action",
    "upload",
    "delete",
    "send",
    "stage",
    "import",
    "member_create",
    "member_update",
    "member_delete",
    "ignore",
)

_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_PREFIX: Final = r"^(?P<prefix>(?:/[^/]+)*?)"
_VERSION: Final = r"/(?P<version>v(?P<major>\d+)(?:\.\d+)?)"


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """One route: *method* plus a path regex, and the *kind* of lifecycle step it is.

    *api* is 1 or 2 and says how image metadata is read (v1 ``x-image-meta-*``
    headers and ``{"image": {...}}`` bodies, or v2 JSON).
    """

    method: str
    pattern: re.Pattern[str]
    kind: str
    api: int = 2


class Match(NamedTuple):
    """A matched request: its route and kind, the image (and member) id, where the API lives.

    A tuple rather than a dataclass: one is built for every image request.
    """

    route: Route
    image_id: str | None
    prefix: str
    version: str
    kind: str  # route.kind, read on every request: a field, not a property
    member_id: str | None = None

    def lookup_path(self) -> str:
        """The path that returns this image's metadata (v1 HEAD, v2 GET)."""
        return f"{self.prefix}/{self.version}/images/{self.image_id}"

    def member_path(self) -> str:
        """The path that returns this image member (v2 GET)."""
        return f"{self.lookup_path()}/members/{self.member_id}"


def _builtin(method: str, tail: str, kind: str, api: int) -> Route:
    version = _VERSION.replace(r"\d+", str(api), 1)
    return Route(method, re.compile(f"{_PREFIX}{version}/images{tail}/?$"), kind, api)


_ID: Final = r"/(?P<id>[^/]+)"
_V1_ID: Final = r"/(?P<id>(?!detail/?$)[^/]+)"
_MEMBER: Final = r"/members/(?P<member>[^/]+)"

BUILTIN_ROUTES: Final = (
    _builtin("POST", "", "create_with_data", 1),
    _builtin("PUT", _V1_ID, "update_with_data", 1),
    _builtin("DELETE", _V1_ID, "delete", 1),
    _builtin("GET", _V1_ID, "send", 1),
    _builtin("POST", "", "create", 2),
    _builtin("PATCH", _ID, "update", 2),
    _builtin("PUT", f"{_ID}/file", "upload", 2),
    _builtin("GET", f"{_ID}/file", "send", 2),
    _builtin("DELETE", _ID, "delete", 2),
    _builtin("POST", f"{_ID}/actions/(?:deactivate|reactivate)", "status_action", 2),
    # A tag added or removed: Glance saves the image, which it reports as image.update.
    _builtin("PUT", f"{_ID}/tags/[^/]+", "update", 2),
    _builtin("DELETE", f"{_ID}/tags/[^/]+", "update", 2),
    _builtin("PUT", f"{_ID}/stage", "stage", 2),
    _builtin("POST", f"{_ID}/import", "import", 2),
    _builtin("POST", f"{_ID}/members", "member_create", 2),
    _builtin("PUT", f"{_ID}{_MEMBER}", "member_update", 2),
    _builtin("DELETE", f"{_ID}{_MEMBER}", "member_delete", 2),
)


class RouteTable:
    """Match requests against configured routes first, then the built-in table."""

    __slots__ = ("_by_method", "_needle", "_remembered")

    def __init__(self, extra: tuple[Route, ...] = (), *, builtin: bool = True) -> None:
        routes = (*extra, *(BUILTIN_ROUTES if builtin else ()))
        self._by_method: dict[str, tuple[Route, ...]] = {}
        for route in routes:
            self._by_method[route.method] = (*self._by_method.get(route.method, ()), route)
        # Every built-in path contains "/images"; custom routes may not.
        self._needle = "/images" if not extra else "/"
        # Image paths repeat (POST /v2/images, GET /v2/images, one image's PATCH, PUT
        # and GET): remember recent answers instead of running the regexes again.
        self._remembered = functools.lru_cache(maxsize=_REMEMBERED)(self._search)

    def match(self, method: str, path: str) -> Match | None:
        """The first route matching *method* and *path*, or None (also for ``ignore``)."""
        if self._needle not in path:
            return None
        if len(path) > _REMEMBERED_LENGTH:  # no client fills the memory with long paths
            return self._search(method, path)
        return self._remembered(method, path)

    def _search(self, method: str, path: str) -> Match | None:
        for route in self._by_method.get(method, ()):
            found = route.pattern.match(path)
            if found is not None:
                if route.kind == "ignore":
                    return None
                groups = found.groupdict()
                return Match(
                    route,
                    groups.get("id"),
                    groups.get("prefix") or "",
                    groups.get("version") or f"v{route.api}",
                    route.kind,
                    groups.get("member"),
                )
        return None


_REMEMBERED: Final = 1024
_REMEMBERED_LENGTH: Final = 256


def parse_routes(name: str, text: str) -> tuple[Route, ...]:
    """Parse the ``routes`` option: ``METHOD /path/{id}/tail KIND [v1|v2]`` per entry."""
    routes = []
    for entry in re.split(r"[;\n]", text):
        if entry.strip():
            routes.append(_parse_route(name, entry.strip()))
    return tuple(routes)


def _parse_route(name: str, entry: str) -> Route:
    parts = entry.split()
    accepted = "entries 'METHOD /path/{id}/... KIND [v1|v2]', KIND one of " + ", ".join(KINDS)
    if len(parts) not in (3, 4) or parts[0].upper() not in _METHODS or not parts[1].startswith("/"):
        raise ConfigError(name, entry, accepted)
    method, template, kind = parts[0].upper(), parts[1], parts[2].lower()
    api = parts[3].lower() if len(parts) == 4 else "v2"
    if kind not in KINDS or api not in ("v1", "v2"):
        raise ConfigError(name, entry, accepted)
    escaped = re.escape(template.rstrip("/")).replace(re.escape("{id}"), "(?P<id>[^/]+)")
    escaped = escaped.replace(re.escape("{version}"), r"(?P<version>v\d+(?:\.\d+)?)")
    escaped = escaped.replace(re.escape("{member}"), "(?P<member>[^/]+)")
    return Route(method, re.compile(f"{_PREFIX}{escaped}/?$"), kind, int(api[1]))


def created_image_id(headers: list[tuple[str, str]]) -> str | None:
    """The id at the end of a create's ``Location: …/images/{id}`` header, if any."""
    for name, value in headers:
        if name.lower() == "location":
            _, found, image_id = value.rstrip("/").rpartition("/images/")
            return image_id if found and image_id and "/" not in image_id else None
    return None


def carries_data(environ: Mapping[str, Any]) -> bool:
    """Whether a create or update request brings image data (a body, or v1's copy-from)."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    if environ.get("HTTP_X_GLANCE_API_COPY_FROM") or environ.get("HTTP_X_IMAGE_META_LOCATION"):
        return True
    try:
        return int(environ.get("CONTENT_LENGTH") or 0) > 0
    except ValueError:
        return False
