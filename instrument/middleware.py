"""The WSGI middleware: image API requests in, lifecycle notifications out.

Add it to a PasteDeploy pipeline::

    [filter:notifications]
    use = egg:instrument#notifications
    notifier_strategy = rabbit
    rabbit_host = broker.example.org

    [pipeline:glance-api]
    pipeline = ... context notifications rootapp

It recognises image requests with :mod:`instrument.routes`, lets the application
answer, and emits the events the outcome means: on success the INFO events with the
image metadata (read from the response, or asked of the application through an
internal subrequest, see :mod:`instrument._subrequest`); on a 4xx the event at WARN
and on a 5xx or an exception at ERROR, with a text payload. Downloads are counted by
:func:`instrument.sending.count_sent` while they stream.

The client always receives exactly what the application produced: the kit never
changes a status, a header or a byte of the body, never buffers a download, and an
exception inside the kit is logged, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from . import events as ev
from ._guard import guard
from ._observer import observe
from ._subrequest import SUBREQUEST_KEY, LookupResult, lookup_image
from ._wsgi import Environ, StartResponse, WSGIApp, status_code
from .config import Settings
from .images import deleted_image, image_from_body, image_from_headers, prepared_image
from .notifier import Notifier
from .options import Option, boolean
from .payloads import error_payload
from .routes import Match, RouteTable, parse_routes
from .sending import counted_download

__all__ = ["MIDDLEWARE_OPTIONS", "NotificationMiddleware", "filter_factory"]

log = logging.getLogger("instrument.middleware")

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
MIDDLEWARE_OPTIONS: Final = (ROUTES_OPTION, LOOKUP_OPTION)

#: The event that fails when a request of each kind fails.
_FAILURE_EVENT: Final = {
    "create": ev.IMAGE_CREATE,
    "create_with_data": ev.IMAGE_CREATE,
    "update": ev.IMAGE_UPDATE,
    "update_with_data": ev.IMAGE_UPDATE,
    "upload": ev.IMAGE_UPLOAD,
    "delete": ev.IMAGE_DELETE,
    "send": ev.IMAGE_SEND,
}
_DATA_EVENTS: Final = (ev.IMAGE_PREPARE, ev.IMAGE_UPLOAD, ev.IMAGE_ACTIVATE)
#: Kinds whose requests may carry image data (v1 create and update).
_DATA_KINDS: Final = frozenset({"create_with_data", "update_with_data"})
#: Kinds that do something before the application runs (see _Lifecycle.prepare).
_PREPARING_KINDS: Final = frozenset({"upload", "update_with_data", "delete"})
#: Every event a kind may emit: a route whose events are all disabled is not observed.
_KIND_EVENTS: Final = {
    "create": (ev.IMAGE_CREATE,),
    "create_with_data": (ev.IMAGE_CREATE, *_DATA_EVENTS),
    "update": (ev.IMAGE_UPDATE,),
    "update_with_data": (ev.IMAGE_UPDATE, *_DATA_EVENTS),
    "upload": _DATA_EVENTS,
    "delete": (ev.IMAGE_DELETE,),
    "send": (ev.IMAGE_SEND,),
}


class NotificationMiddleware:
    """Wrap *app* so that image API requests emit lifecycle notifications."""

    def __init__(
        self,
        app: WSGIApp,
        notifier: Notifier | None = None,
        *,
        routes: RouteTable | None = None,
        image_lookup: bool = True,
    ) -> None:
        self.app = app
        self.notifier = notifier if notifier is not None else Notifier()
        self.routes = routes if routes is not None else RouteTable()
        self.image_lookup = image_lookup
        # The Notifier's disabled events are fixed: decide once which kinds are watched.
        enabled = self.notifier.is_enabled
        self._observed_kinds = frozenset(
            kind for kind, events in _KIND_EVENTS.items() if any(map(enabled, events))
        )

    @classmethod
    def from_settings(cls, app: WSGIApp, settings: Settings) -> NotificationMiddleware:
        """Build the middleware and its Notifier; ConfigError for any bad option."""
        return cls(
            app,
            Notifier.from_settings(settings),
            routes=RouteTable(settings.get(ROUTES_OPTION)),
            image_lookup=settings.get(LOOKUP_OPTION),
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        match = None if environ.get(SUBREQUEST_KEY) else self._match(environ)
        if match is None:
            return self.app(environ, start_response)
        if match.kind == "send":
            return _Download(self, match, environ).run(start_response)
        return _Lifecycle(self, match, environ).run(start_response)

    def _match(self, environ: Environ) -> Match | None:
        try:
            match = self.routes.match(environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/")
        except Exception:
            log.exception("instrument: cannot match request; passing it through")
            return None
        return match if match is not None and match.kind in self._observed_kinds else None

    def lookup(self, environ: Environ, match: Match) -> LookupResult | None:
        """The image's metadata from the application, or None (logged) if it failed."""
        if not self.image_lookup or not match.image_id:
            return None
        method = "HEAD" if match.route.api == 1 else "GET"
        try:
            result = lookup_image(self.app, environ, method, match.lookup_path())
        except Exception:
            log.warning(
                "instrument: metadata lookup for image %s failed", match.image_id, exc_info=True
            )
            return None
        if result.image is None and not result.not_found:
            log.warning(
                "instrument: metadata lookup for image %s answered %s",
                match.image_id,
                result.status,
            )
        return result

    def __repr__(self) -> str:
        return f"<NotificationMiddleware {self.notifier!r} app={self.app!r}>"


class _Exchange:
    """One observed request: the status and headers the application answered with."""

    __slots__ = ("environ", "headers", "match", "middleware", "notifier", "status")

    def __init__(self, middleware: NotificationMiddleware, match: Match, environ: Environ) -> None:
        self.middleware = middleware
        self.notifier = middleware.notifier
        self.match = match
        self.environ = environ
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []

    def recording(self, start_response: StartResponse) -> StartResponse:
        def record(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            self.status, self.headers = status, headers
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        return record

    def image_or_id(self) -> dict[str, Any]:
        result = self.middleware.lookup(self.environ, self.match)
        if result is not None and result.image is not None:
            return result.image
        return {"id": self.match.image_id}

    def fail(self, event_type: str, problem: str, image_id: str | None, *, warn: bool) -> None:
        payload = error_payload(event_type, image_id, problem)
        (self.notifier.warn if warn else self.notifier.error)(event_type, payload)


class _Lifecycle(_Exchange):
    """create / update / upload / delete: emit after the application has answered."""

    __slots__ = ("before", "has_data", "kind", "prepared")

    def __init__(self, middleware: NotificationMiddleware, match: Match, environ: Environ) -> None:
        super().__init__(middleware, match, environ)
        self.kind = match.kind
        self.has_data = self.kind in _DATA_KINDS and _has_data(environ)
        self.before: dict[str, Any] | None = None
        self.prepared = False

    def run(self, start_response: StartResponse) -> Iterable[bytes]:
        if self.kind in _PREPARING_KINDS:
            guard(self.prepare)
        try:
            app_iter = self.middleware.app(self.environ, self.recording(start_response))
        except Exception as exc:
            guard(self.finish, None, exc)
            raise
        return observe(app_iter, self.finish)

    def prepare(self) -> None:
        """Before the data is passed on: image.prepare; before a delete: remember the image."""
        uploading = self.kind == "upload" or (self.kind == "update_with_data" and self.has_data)
        if uploading and self.notifier.is_enabled(ev.IMAGE_PREPARE):
            result = self.middleware.lookup(self.environ, self.match)
            if result is not None and result.refused:
                return  # the upload will be refused before the store is touched
            known = result is not None and result.image is not None
            image = (
                result.image if result is not None and result.image else {"id": self.match.image_id}
            )
            prepared = prepared_image(image)
            if prepared is not None:
                self.notifier.info(ev.IMAGE_PREPARE, prepared)
                # Only a confirmed, uploadable image makes a later failure an ERROR.
                self.prepared = known
        elif self.kind == "delete" and self.notifier.is_enabled(ev.IMAGE_DELETE):
            self.before = self.image_or_id()

    def finish(self, body: bytes | None, exc: BaseException | None) -> None:
        code = status_code(self.status) if exc is None else 500
        if 200 <= code < 300:
            self.succeeded(body)
        elif code >= 400:
            problem = self.status if exc is None else f"{type(exc).__name__}: {exc}"
            event = _FAILURE_EVENT[self.kind]
            if self.kind == "update_with_data" and self.has_data:
                event = ev.IMAGE_UPLOAD
            # Once image.prepare went out the store was touched: Glance reports any
            # failure after it as an ERROR image.upload, whatever the HTTP status.
            warn = code < 500 and not (self.prepared and event == ev.IMAGE_UPLOAD)
            self.fail(event, str(problem), self.match.image_id, warn=warn)

    def succeeded(self, body: bytes | None) -> None:
        if self.kind == "delete":
            self.notifier.info(
                ev.IMAGE_DELETE, deleted_image(self.before or {"id": self.match.image_id})
            )
            return
        image = (body and image_from_body(body)) or image_from_headers(self.headers)
        if image is None:
            image = self.image_or_id()
        for event_type in self.events_for(image):
            self.notifier.info(event_type, image)

    def events_for(self, image: Mapping[str, Any]) -> list[str]:
        data = [ev.IMAGE_UPLOAD] + ([ev.IMAGE_ACTIVATE] if image.get("status") == "active" else [])
        if self.kind == "create_with_data":
            return (
                [ev.IMAGE_CREATE, ev.IMAGE_PREPARE, *data] if self.has_data else [ev.IMAGE_CREATE]
            )
        if self.kind == "update_with_data":
            return [*data, ev.IMAGE_UPDATE] if self.has_data else [ev.IMAGE_UPDATE]
        if self.kind == "upload":
            return data
        return [_FAILURE_EVENT[self.kind]]


class _Download(_Exchange):
    """image.send: count the body while it streams (see :mod:`instrument.sending`)."""

    __slots__ = ()

    def run(self, start_response: StartResponse) -> Iterable[bytes]:
        return counted_download(
            self.middleware.app,
            self.environ,
            start_response,
            self.notifier,
            image_id=self.match.image_id,
            describe=self.describe,
        )

    def describe(self, status: str, headers: list[tuple[str, str]]) -> tuple[Any, Any]:
        """The owner and size of the image: v1 headers, else a metadata lookup."""
        image = image_from_headers(headers) if self.match.route.api == 1 else None
        if image is None:
            image = self.image_or_id()
        return image.get("owner"), image.get("size")


def filter_factory(
    global_conf: Mapping[str, Any], **local_conf: Any
) -> Callable[[WSGIApp], WSGIApp]:
    """The paste.filter_factory: ``use = egg:instrument#notifications``.

    Options come from the filter's own section (``local_conf``) and ``INSTRUMENT_*``
    environment variables. Everything is validated here, at start-up: a bad option
    stops the service from starting with a ConfigError that names it.
    """
    settings = Settings.load(local_conf)
    notifier = Notifier.from_settings(settings)
    routes = RouteTable(settings.get(ROUTES_OPTION))
    image_lookup: bool = settings.get(LOOKUP_OPTION)

    def make_filter(app: WSGIApp) -> WSGIApp:
        return NotificationMiddleware(app, notifier, routes=routes, image_lookup=image_lookup)

    return make_filter


def _has_data(environ: Environ) -> bool:
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    if environ.get("HTTP_X_GLANCE_API_COPY_FROM") or environ.get("HTTP_X_IMAGE_META_LOCATION"):
        return True
    try:
        return int(environ.get("CONTENT_LENGTH") or 0) > 0
    except ValueError:
        return False
