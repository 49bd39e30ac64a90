"""A small image service shaped like Glance's v2 image API (WebOb), data on disk.

Enough of Glance for ``python-glanceclient`` and for the kit's tests and demo:
``/versions``, ``/v2/schemas/image(s)``, ``POST/GET /v2/images``,
``GET/PATCH/DELETE /v2/images/{id}`` (PATCH takes
``application/openstack-images-v2.1-json-patch``), ``PUT/GET /v2/images/{id}/file``
with ``Range`` support, and the deactivate/reactivate actions. Downloads use
``wsgi.file_wrapper`` so servers can send them with sendfile.

It knows nothing of notifications: the paste pipeline or the decorators add them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from webob import Request, Response
from webob import exc as http

from .schemas import IMAGE_SCHEMA, IMAGES_SCHEMA

__all__ = ["ImageAPI", "app_factory"]

_MUTABLE = {"name", "visibility", "protected", "tags", "min_disk", "min_ram", "os_hidden"}
_CREATE_FIELDS = _MUTABLE | {"id", "disk_format", "container_format"}
_ROUTES = [
    ("GET", r"/versions/?", "versions"),
    ("GET", r"/v2/schemas/image/?", "image_schema"),
    ("GET", r"/v2/schemas/images/?", "images_schema"),
    ("POST", r"/v2/images/?", "create"),
    ("GET", r"/v2/images/?", "index"),
    ("GET", r"/v2/images/(?P<id>[^/]+)/?", "show"),
    ("PATCH", r"/v2/images/(?P<id>[^/]+)/?", "update"),
    ("DELETE", r"/v2/images/(?P<id>[^/]+)/?", "delete"),
    ("PUT", r"/v2/images/(?P<id>[^/]+)/file/?", "upload"),
    ("GET", r"/v2/images/(?P<id>[^/]+)/file/?", "download"),
    ("POST", r"/v2/images/(?P<id>[^/]+)/actions/(?P<action>deactivate|reactivate)/?", "action"),
    ("PUT", r"/v2/images/(?P<id>[^/]+)/tags/(?P<tag>[^/]+)/?", "add_tag"),
    ("DELETE", r"/v2/images/(?P<id>[^/]+)/tags/(?P<tag>[^/]+)/?", "delete_tag"),
]
_COMPILED = [(m, re.compile(p + "$"), name) for m, p, name in _ROUTES]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ImageAPI:
    """The WSGI application. Images live in memory, their data in *data_dir*."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="image-api-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.images: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except http.HTTPException as error:
            response = error
        body: Iterable[bytes] = response(environ, start_response)
        return body

    def dispatch(self, request: Request) -> Any:
        path = request.path_info
        allowed = False
        for method, pattern, name in _COMPILED:
            found = pattern.match(path)
            if found:
                allowed = True
                if method == request.method or (method == "GET" and request.method == "HEAD"):
                    handler: Callable[..., Any] = getattr(self, name)
                    return handler(request, **found.groupdict())
        raise http.HTTPMethodNotAllowed() if allowed else http.HTTPNotFound()

    # --- documents --------------------------------------------------------------
    def versions(self, request: Request) -> Response:
        url = request.host_url + "/v2/"
        return _json(
            {
                "versions": [
                    {"id": "v2.9", "status": "CURRENT", "links": [{"rel": "self", "href": url}]}
                ]
            }
        )

    def image_schema(self, request: Request) -> Response:
        return _json(IMAGE_SCHEMA)

    def images_schema(self, request: Request) -> Response:
        return _json(IMAGES_SCHEMA)

    # --- records ----------------------------------------------------------------
    def create(self, request: Request) -> Response:
        body = _body(request)
        unknown = set(body) - _CREATE_FIELDS
        if unknown:
            raise http.HTTPForbidden(f"Attribute '{sorted(unknown)[0]}' is read-only.")
        image_id = str(body.get("id") or uuid.uuid4())
        with self._lock:
            if image_id in self.images:
                raise http.HTTPConflict(f"Image with identifier {image_id} already exists!")
            self.images[image_id] = _new_image(image_id, body, _owner(request))
        return _json(self.view(self.images[image_id]), status=201)

    def index(self, request: Request) -> Response:
        images = [self.view(image) for image in self.images.values()]
        return _json({"images": images, "schema": "/v2/schemas/images", "first": "/v2/images"})

    def show(self, request: Request, id: str) -> Response:
        return _json(self.view(self.get(id)))

    def update(self, request: Request, id: str) -> Response:
        image = self.get(id)
        if not request.content_type.startswith("application/openstack-images-v2"):
            raise http.HTTPUnsupportedMediaType("Use application/openstack-images-v2.1-json-patch")
        changes = json.loads(request.body or b"[]")
        with self._lock:
            for change in changes:
                _apply(image, change)
            image["updated_at"] = _now()
        return _json(self.view(image))

    def delete(self, request: Request, id: str) -> Response:
        image = self.get(id)
        if image["protected"]:
            raise http.HTTPForbidden(f"Image {id} is protected and cannot be deleted.")
        with self._lock:
            del self.images[id]
        self.data_path(id).unlink(missing_ok=True)
        return Response(status=204)

    def action(self, request: Request, id: str, action: str) -> Response:
        image = self.get(id)
        if image["status"] not in ("active", "deactivated"):
            raise http.HTTPForbidden(f"Not allowed to {action} image in status '{image['status']}'")
        image["status"] = "deactivated" if action == "deactivate" else "active"
        image["updated_at"] = _now()
        return Response(status=204)

    def add_tag(self, request: Request, id: str, tag: str) -> Response:
        """Glance's ``PUT /v2/images/{id}/tags/{tag}``: 204, the tag added once."""
        image = self.get(id)
        with self._lock:
            if tag not in image["tags"]:
                image["tags"].append(tag)
            image["updated_at"] = _now()
        return Response(status=204)

    def delete_tag(self, request: Request, id: str, tag: str) -> Response:
        """Glance's ``DELETE /v2/images/{id}/tags/{tag}``: 204, or 404 for a tag it lacks."""
        image = self.get(id)
        with self._lock:
            if tag not in image["tags"]:
                raise http.HTTPNotFound(f"Tag {tag} not found")
            image["tags"].remove(tag)
            image["updated_at"] = _now()
        return Response(status=204)

    # --- data -------------------------------------------------------------------
    def upload(self, request: Request, id: str) -> Response:
        image = self.get(id)
        if image["status"] != "queued":
            raise http.HTTPConflict(
                f"Image status transition from {image['status']} to saving is not allowed"
            )
        image["status"] = "saving"
        try:
            size, md5, sha512 = self._store(id, request.body_file_raw, request.content_length)
        except Exception:
            image["status"] = "queued"
            self.data_path(id).unlink(missing_ok=True)
            raise
        image.update(size=size, checksum=md5, os_hash_algo="sha512", os_hash_value=sha512)
        image.update(status="active", updated_at=_now())
        return Response(status=204)

    def download(self, request: Request, id: str) -> Any:
        image = self.get(id)
        if image["status"] == "deactivated":
            raise http.HTTPForbidden("The requested image has been deactivated.")
        if image["status"] != "active":
            return Response(status=204)
        return _FileResponse(self.data_path(id), image["size"], image["checksum"], request.range)

    def _store(self, id: str, stream: Any, length: int | None) -> tuple[int, str, str]:
        md5, sha512, size = hashlib.md5(), hashlib.sha512(), 0
        with open(self.data_path(id), "wb") as out:
            while length is None or size < length:
                chunk = stream.read(min(65536, length - size) if length is not None else 65536)
                if not chunk:
                    break
                out.write(chunk)
                md5.update(chunk)
                sha512.update(chunk)
                size += len(chunk)
        if length is not None and size != length:
            raise http.HTTPBadRequest(f"Expected {length} bytes of image data, got {size}")
        return size, md5.hexdigest(), sha512.hexdigest()

    # --- helpers ----------------------------------------------------------------
    def get(self, id: str) -> dict[str, Any]:
        try:
            return self.images[id]
        except KeyError:
            raise http.HTTPNotFound(f"No image found with ID {id}") from None

    def data_path(self, id: str) -> Path:
        return self.data_dir / f"{id}.img"

    @staticmethod
    def view(image: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in image.items() if k != "properties"}
        view.update(image["properties"])
        view.update(
            self=f"/v2/images/{image['id']}",
            file=f"/v2/images/{image['id']}/file",
            schema="/v2/schemas/image",
        )
        return view


class _FileResponse:
    """A download: the whole file through ``wsgi.file_wrapper``, or one byte range."""

    def __init__(self, path: Path, size: int, checksum: str, byte_range: Any) -> None:
        self.path, self.size, self.checksum, self.range = path, size, checksum, byte_range

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        headers = [("Content-Type", "application/octet-stream"), ("Content-MD5", self.checksum)]
        window = self.range.range_for_length(self.size) if self.range is not None else None
        if self.range is not None and window is None:
            start_response(
                "416 Requested Range Not Satisfiable", [("Content-Range", f"bytes */{self.size}")]
            )
            return [b""]
        handle = open(self.path, "rb")  # noqa: SIM115 - closed by the file wrapper or _read
        if window is None:
            start_response("200 OK", [*headers, ("Content-Length", str(self.size))])
            wrapper = environ.get("wsgi.file_wrapper")
            return wrapper(handle, 65536) if wrapper else _read(handle, 0, self.size)
        start, stop = window
        headers += [
            ("Content-Length", str(stop - start)),
            ("Content-Range", f"bytes {start}-{stop - 1}/{self.size}"),
        ]
        start_response("206 Partial Content", headers)
        return _read(handle, start, stop - start)


def _read(handle: Any, start: int, length: int) -> Iterator[bytes]:
    with handle:
        handle.seek(start)
        while length > 0:
            chunk = handle.read(min(65536, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def _new_image(image_id: str, body: dict[str, Any], owner: str | None) -> dict[str, Any]:
    now = _now()
    return {
        "id": image_id,
        "name": body.get("name"),
        "status": "queued",
        "visibility": body.get("visibility", "shared"),
        "protected": bool(body.get("protected", False)),
        "os_hidden": bool(body.get("os_hidden", False)),
        "checksum": None,
        "os_hash_algo": None,
        "os_hash_value": None,
        "owner": owner,
        "size": None,
        "virtual_size": None,
        "min_disk": int(body.get("min_disk", 0)),
        "min_ram": int(body.get("min_ram", 0)),
        "disk_format": body.get("disk_format"),
        "container_format": body.get("container_format"),
        "created_at": now,
        "updated_at": now,
        "tags": list(body.get("tags", [])),
        "properties": {},
    }


def _apply(image: dict[str, Any], change: dict[str, Any]) -> None:
    op, path = change.get("op"), str(change.get("path", "")).lstrip("/")
    if op not in ("add", "replace", "remove") or not path:
        raise http.HTTPBadRequest(f"Unsupported change {change!r}")
    target = image if path in _MUTABLE else image["properties"]
    if path not in _MUTABLE and path in image:
        raise http.HTTPForbidden(f"Attribute '{path}' is read-only.")
    if op == "remove":
        if target.pop(path, None) is None and target is image["properties"]:
            raise http.HTTPConflict(f"Property {path} does not exist.")
    else:
        target[path] = change.get("value")


def _owner(request: Request) -> str | None:
    return request.headers.get("X-Project-Id") or request.headers.get("X-Tenant-Id") or "demo"


def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise http.HTTPBadRequest("Body is not JSON") from None
    if not isinstance(body, dict):
        raise http.HTTPBadRequest("Body must be a JSON object")
    return body


def _json(document: Any, status: int = 200) -> Response:
    return Response(
        body=json.dumps(document).encode(),
        status=status,
        content_type="application/json",
    )


def app_factory(global_conf: dict[str, Any], **local_conf: Any) -> ImageAPI:
    """The paste.app_factory: ``paste.app_factory = examples.image_api.app:app_factory``."""
    return ImageAPI(local_conf.get("data_dir"))
