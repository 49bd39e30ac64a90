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
:func:`instrument.sending.count_sent` while they stream. What imports and members need
around the request (the import's body, the member before a removal) is in
:mod:`instrument._import_member`; the filter's options in :mod:`instrument._filter_options`.

The client always receives exactly what the application produced: the kit never
changes a status, a header or a byte of the body, never buffers a download, and an
exception inside the kit is logged, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from . import events as ev
from ._filter_options import MIDDLEWARE_OPTIONS, SEEN_AGE_OPTION, SEEN_OPTION, filter_options
from ._first_read import FirstRead
from ._follower import ImportFollower
from ._guard import guard
from ._import_member import member_before, member_notification, read_import_request
from ._imports import ImportRequest
from ._observer import BodyCopy, observe
from ._seen import SeenImages
from ._subrequest import SUBREQUEST_KEY, LookupResult, lookup_image
from ._wsgi import Environ, StartResponse, WSGIApp, status_code
from .config import CORE_OPTIONS, Settings
from .images import can_take_data, deleted_image, image_from_body, image_from_headers
from .lifecycle import (
    DATA_KINDS,
    KIND_EVENTS,
    MEMBER_KINDS,
    emit_prepare,
    failure_event,
    failure_priority,
    problem_of,
    report_failure,
    status_unchanged,
    success_events,
)
from .notifier import Notifier
from .options import Option
from .oslo import from_service_config
from .routes import Match, RouteTable, carries_data, created_image_id
from .sending import counted_download
from .strategies import strategy_options

__all__ = ["MIDDLEWARE_OPTIONS", "NotificationMiddleware", "filter_factory", "known_options"]

log = logging.getLogger("instrument.middleware")

#: Kinds that do something before the application runs (see _Lifecycle.prepare).
_PREPARING_KINDS: Final = frozenset(
    {"upload", "update_with_data", "status_action", "delete", "import", "member_delete"}
)


class NotificationMiddleware:
    """Wrap *app* so that image API requests emit lifecycle notifications."""

    def __init__(
        self,
        app: WSGIApp,
        notifier: Notifier | None = None,
        *,
        routes: RouteTable | None = None,
        image_lookup: bool = True,
        seen_images: int = SEEN_OPTION.default,
        seen_max_age: float = SEEN_AGE_OPTION.default,
        imports: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.seen = SeenImages(seen_images, seen_max_age)
        self.notifier = notifier if notifier is not None else Notifier()
        self.routes = routes if routes is not None else RouteTable()
        self.image_lookup = image_lookup
        self.imports = ImportFollower(app, self.notifier, **(imports or {}))
        # The Notifier's disabled events are fixed: decide once which kinds are watched.
        enabled = self.notifier.is_enabled
        self._observed_kinds = frozenset(
            kind for kind, events in KIND_EVENTS.items() if any(map(enabled, events))
        )

    @classmethod
    def from_settings(cls, app: WSGIApp, settings: Settings) -> NotificationMiddleware:
        """Build the middleware and its Notifier; ConfigError for any bad option."""
        notifier = Notifier.from_settings(settings, also_known=MIDDLEWARE_OPTIONS)
        return cls(app, notifier, **filter_options(settings))

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
        if result.image is not None:
            self.seen.remember(result.image)
        elif not result.not_found:
            log.warning(
                "instrument: metadata lookup for image %s answered %s",
                match.image_id,
                result.status,
            )
        return result

    def __repr__(self) -> str:
        return f"<NotificationMiddleware {self.notifier!r} app={self.app!r}>"


class _ObservedRequest:
    """One observed request: the status and headers the application answered with."""

    __slots__ = ("copy", "environ", "headers", "match", "middleware", "notifier", "status")

    def __init__(self, middleware: NotificationMiddleware, match: Match, environ: Environ) -> None:
        self.middleware = middleware
        self.notifier = middleware.notifier
        self.match = match
        self.environ = environ
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.copy = BodyCopy()  # the response body, from write() and the iterable

    def recording(self, start_response: StartResponse) -> StartResponse:
        def record(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            self.status, self.headers = status, headers
            if exc_info is not None:
                write = start_response(status, headers, exc_info)
            else:
                write = start_response(status, headers)
            return self.keeping(write)

        return record

    def keeping(self, write: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        """PEP 3333's ``write()``, keeping a copy of what the application sends with it
        (a legacy application may send its whole body so), up to the body limit."""

        def keep(data: bytes) -> Any:
            self.copy.keep(data)
            return write(data)

        return keep

    def image_or_id(self, seen: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
        """*seen* if given, else the image from a lookup, else just its id."""
        if seen is not None:
            return seen
        result = self.middleware.lookup(self.environ, self.match)
        if result is not None and result.image is not None:
            return result.image
        return {"id": self.match.image_id}


class _Lifecycle(_ObservedRequest):
    """create / update / upload / delete: emit after the application has answered."""

    __slots__ = ("before", "has_data", "import_request", "kind", "prepared", "unprepared")

    def __init__(self, middleware: NotificationMiddleware, match: Match, environ: Environ) -> None:
        super().__init__(middleware, match, environ)
        self.kind = match.kind
        self.has_data = self.kind in DATA_KINDS and carries_data(environ)
        self.before: Mapping[str, Any] | None = None
        self.prepared = False
        self.unprepared: Mapping[str, Any] | None = None  # image.prepare at the first read
        self.import_request = ImportRequest()

    def run(self, start_response: StartResponse) -> Iterable[bytes]:
        if self.kind in _PREPARING_KINDS:
            guard(self.prepare)
        try:
            app_iter = self.middleware.app(self.environ, self.recording(start_response))
        except Exception as exc:
            guard(self.finish, None, exc)
            raise
        if type(app_iter) is list and self.status is not None:
            # A list is the whole response already (WebOb and most JSON APIs answer so):
            # emit now and give the server the very same list, len() and all. A caller
            # that never iterates or closes a body it does not need (WebOb's
            # Request.get_response with a 204) still gets its notifications.
            guard(self.finish_listed, app_iter)
            return app_iter
        return observe(app_iter, self.finish, self.copy)

    def finish_listed(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.copy.keep(chunk)
        self.finish(self.copy.joined(), None)

    def prepare(self) -> None:
        """Before the data is passed on: image.prepare; before a delete: remember the image.

        image.prepare goes out when the application first reads the data: reading shows
        it took the upload, and a refusal reads nothing. So the outcome is the same
        whether the image came from the filter's memory or from a lookup.
        """
        uploading = self.kind == "upload" or (self.kind == "update_with_data" and self.has_data)
        if uploading:
            image = self.uploadable_image()
            if image is not None:
                self.unprepared = image
                self.environ["wsgi.input"] = FirstRead.wrap(
                    self.environ["wsgi.input"], self.read_begins
                )
        elif self.kind == "delete":
            # An import of this image still followed: how it ended cannot be read once
            # the image is gone, so ask now (its events come before image.delete).
            self.middleware.imports.settle(self.match.image_id)
            if self.notifier.is_enabled(ev.IMAGE_DELETE):
                self.before = self.image_or_id(self.middleware.seen.get(self.match.image_id))
        elif self.kind == "import":
            self.import_request = read_import_request(self.environ)
        elif self.kind == "status_action" and self.notifier.is_enabled(ev.IMAGE_UPDATE):
            # The status before, asked now (remembered, it may be another worker's past):
            # deactivating an image that is deactivated changes nothing, and Glance then
            # sends nothing.
            result = self.middleware.lookup(self.environ, self.match)
            self.before = result.image if result is not None else None
        elif self.kind == "member_delete" and self.match.member_id:
            middleware = self.middleware
            self.before = member_before(
                middleware.app, self.environ, self.match, middleware.image_lookup
            )

    def uploadable_image(self) -> Mapping[str, Any] | None:
        """The image image.prepare will show, or None if the upload is refused anyway."""
        image_id = self.match.image_id
        seen = self.middleware.seen.get(image_id)
        if seen is not None and can_take_data(seen):
            return seen  # no subrequest
        if not self.notifier.is_enabled(ev.IMAGE_PREPARE):
            # Nothing to show; the first read still makes a later failure an ERROR.
            return {"id": image_id}
        result = self.middleware.lookup(self.environ, self.match)
        if result is not None and result.refused:
            return None  # the upload will be refused before the store is touched
        if result is not None and result.image is not None:
            return result.image
        return {"id": image_id}

    def read_begins(self) -> None:
        """The application reads the image data: image.prepare of the image seen."""
        seen, self.unprepared = self.unprepared, None
        if seen is not None:
            self.prepared = emit_prepare(self.notifier, seen, known=True)

    def finish(self, body: bytes | None, exc: BaseException | None) -> None:
        code = status_code(self.status) if exc is None else 500
        if 200 <= code < 300:
            self.succeeded(body)
        elif code >= 400:
            if code >= 500 or code == 413:
                # The application took the upload and its store failed, or refused it
                # for its size or quota: Glance prepares before its store says so.
                self.read_begins()
            problem = str(self.status) if exc is None else problem_of(exc)
            event = failure_event(self.kind, self.has_data)
            priority = failure_priority(code, event, self.prepared)
            report_failure(self.notifier, event, self.match.image_id, problem, priority)

    def succeeded(self, body: bytes | None) -> None:
        if self.kind in MEMBER_KINDS:
            found = member_notification(self.kind, self.before, body)
            if found is not None:
                self.notifier.info(*found)
            return
        if self.kind == "import" and self.match.image_id:
            # The import changes the image (status, size, checksum) where this filter does
            # not see it: what it remembers of the image is stale from now on.
            self.middleware.seen.forget(self.match.image_id)
            self.middleware.imports.follow(
                self.environ, self.match.lookup_path(), self.import_request
            )
            return
        if self.kind == "delete":
            self.middleware.seen.forget(self.match.image_id)
            self.notifier.info(
                ev.IMAGE_DELETE, deleted_image(self.before or {"id": self.match.image_id})
            )
            return
        image: Mapping[str, Any] | None = (body and image_from_body(body)) or image_from_headers(
            self.headers
        )
        if image is None:  # not in the response (or too large to keep): ask for it
            if self.match.image_id is None:  # a create: the new image is in Location
                self.match = self.match._replace(image_id=created_image_id(self.headers))
            image = self.image_or_id()
        else:
            self.middleware.seen.remember(image)
        if self.kind == "status_action" and status_unchanged(self.before, image):
            return
        self.read_begins()  # an upload the application took without reading (no data)
        for event_type in success_events(self.kind, self.has_data, image):
            self.notifier.info(event_type, image)


class _Download(_ObservedRequest):
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
        image: Mapping[str, Any] | None = None
        if self.match.route.api == 1:
            image = image_from_headers(headers)
        if image is None:
            image = self.image_or_id(self.middleware.seen.active(self.match.image_id))
        return image.get("owner"), image.get("size")


def known_options() -> tuple[Option, ...]:
    """Every option the filter reads: the core's, its own and the installed strategies'."""
    return (*CORE_OPTIONS, *MIDDLEWARE_OPTIONS, *strategy_options())


def filter_factory(
    global_conf: Mapping[str, Any], **local_conf: Any
) -> Callable[[WSGIApp], WSGIApp]:
    """The paste.filter_factory: ``use = egg:instrument#notifications``.

    Options come from the filter's own section (``local_conf``), the service's own
    configuration file with ``oslo_config_project`` (see :mod:`instrument.oslo`) and
    ``INSTRUMENT_*`` environment variables. Everything is validated here, at start-up: a
    bad option stops the service from starting with a ConfigError that names it.
    """
    settings = Settings.load(from_service_config(local_conf))
    notifier = Notifier.from_settings(settings, also_known=MIDDLEWARE_OPTIONS)
    options = filter_options(settings)

    def make_filter(app: WSGIApp) -> WSGIApp:
        return NotificationMiddleware(app, notifier, **options)

    return make_filter
