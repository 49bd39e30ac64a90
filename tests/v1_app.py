"""A minimal Glance v1-shaped image API for the middleware's v1 routes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from webob import Request, Response
from webob import exc as http


class V1ImageAPI:
    """Images as x-image-meta-* headers on HEAD/GET, {"image": {...}} bodies on POST/PUT."""

    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}
        self.data: dict[str, bytes] = {}

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        parts = request.path_info.strip("/").split("/")
        try:
            response = self.route(request, parts)
        except http.HTTPException as error:
            response = error
        return response(environ, start_response)

    def route(self, request: Request, parts: list[str]) -> Any:
        if parts[:2] != ["v1", "images"]:
            raise http.HTTPNotFound()
        if len(parts) == 2 and request.method == "POST":
            return self.create(request)
        if len(parts) == 3 and parts[2] == "detail":
            return _json({"images": list(self.images.values())})
        if len(parts) != 3:
            raise http.HTTPNotFound()
        image = self.images.get(parts[2])
        if image is None:
            raise http.HTTPNotFound()
        handler = {"HEAD": self.head, "GET": self.get, "PUT": self.update, "DELETE": self.delete}
        return handler[request.method](request, image)

    def create(self, request: Request) -> Response:
        meta = _meta_from_headers(request)
        image = {
            "id": str(uuid.uuid4()),
            "status": "queued",
            "size": 0,
            "owner": "tenant-1",
            "is_public": False,
            "properties": meta.pop("properties"),
            **meta,
            "location": "swift://user:key@swift/images/x",
        }
        self.images[image["id"]] = image
        self._maybe_store(request, image)
        return _json({"image": image}, 201)

    def update(self, request: Request, image: dict[str, Any]) -> Response:
        meta = _meta_from_headers(request)
        image["properties"].update(meta.pop("properties"))
        image.update(meta)
        self._maybe_store(request, image)
        return _json({"image": image})

    def delete(self, request: Request, image: dict[str, Any]) -> Response:
        del self.images[image["id"]]
        return Response(status=200)

    def head(self, request: Request, image: dict[str, Any]) -> Response:
        return Response(
            status=200, headerlist=[("Content-Type", "text/plain"), *_meta_headers(image)]
        )

    def get(self, request: Request, image: dict[str, Any]) -> Response:
        data = self.data.get(image["id"], b"")
        response = Response(body=data, headerlist=_meta_headers(image))
        response.content_type = "application/octet-stream"
        return response

    def _maybe_store(self, request: Request, image: dict[str, Any]) -> None:
        if request.content_length:
            if image["status"] == "active":
                raise http.HTTPConflict("image already has data")
            self.data[image["id"]] = request.body
            image.update(status="active", size=len(request.body), checksum="abc")


def _meta_from_headers(request: Request) -> dict[str, Any]:
    meta: dict[str, Any] = {"properties": {}}
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered.startswith("x-image-meta-property-"):
            meta["properties"][lowered[len("x-image-meta-property-") :]] = value
        elif lowered.startswith("x-image-meta-"):
            meta[lowered[len("x-image-meta-") :].replace("-", "_")] = value
    return meta


def _meta_headers(image: dict[str, Any]) -> list[tuple[str, str]]:
    headers = [(f"x-image-meta-{k}", str(v)) for k, v in image.items() if k != "properties"]
    headers += [(f"x-image-meta-property-{k}", str(v)) for k, v in image["properties"].items()]
    return headers


def _json(document: Any, status: int = 200) -> Response:
    return Response(
        body=json.dumps(document).encode(),
        status=status,
        content_type="application/json",
    )
