"""Decorators that make image-API handler functions emit lifecycle notifications.

For applications that would rather instrument their own handlers than add the filter::

    on = Instrumentation(notifier)

    @on.create                                          # image.create
    def create_image(request): ...

    @on.upload(image="image_id", lookup=db.find_image)  # prepare, upload, activate
    def upload_image(request, image_id): ...

    @on.send(image="image_id", lookup=db.find_image)    # image.send, counted
    def download(request, image_id): ...

    @instrument_class(notifier, {"create": "create", "delete": "delete"}, image="id")
    class Images: ...

Decisions:

- **API.** :class:`Instrumentation` binds ``create``, ``update``, ``status_action``
  (deactivate/reactivate: image.update only when the image's status changed, read
  with ``lookup`` before and after), ``delete``, ``upload``, ``send``,
  ``member_create``, ``member_update``, ``member_delete`` and
  ``emits(event_type)`` to one Notifier; they are used bare or with keyword-only
  ``payload=``, ``image=``, ``lookup=``, ``enabled=`` (and ``member=`` for the member
  steps: the argument holding the member's id).
- **Members** (:mod:`instrument._member_steps`): image.member.* in Glance's payload
  shape (:func:`.images.member_payload`): the returned member, else what
  ``lookup(image_id, member_id)`` finds, else the two ids; ``member_delete`` reads the
  member before the handler removes it and sends it deleted. Same events as the filter
  for the same requests (``tests/test_decorators_members.py``).
  :func:`instrument_class` applies ``{method name: step or event type}`` in one line.
- **INFO payload**: ``payload(result)`` if given; else the result when it is an image (a
  mapping, dataclass, ``to_dict()``/``as_dict()`` object, WebOb response with a v2 JSON
  or v1 ``{"image": ...}`` body or ``x-image-meta-*`` headers); else the ``image=``
  argument (an image, or an id that ``lookup`` - a callable ``lookup(id)`` or the name of
  a method of the handler's instance - resolves; None means unknown); else ``{"id": id}``.
  Image metadata takes Glance's notification shape (:func:`.images.notification_image`)
  and the Notifier's redaction, as in the middleware; other event types (``emits``) are
  sent as given, redacted. image.prepare and the image.delete payload are read from the
  argument *before* the handler runs; prepare is skipped for an unknown image or one
  not in an uploadable status, and image.activate follows image.upload when the image
  is active, as in the middleware.
- **Outcome.** A returned WebOb response: 2xx success, 4xx the step's event at WARN,
  5xx at ERROR (text from :func:`.payloads.error_payload`), 3xx nothing. A raised webob
  ``HTTPException`` counts by its status, any other ``Exception`` is ERROR
  (``"Type: message"``); it is re-raised (same object, traceback untouched). image.send
  failures carry the send dict with ``bytes_sent`` 0. Other ``BaseException`` types
  (cancellation, generator close) emit nothing: the step neither completed nor failed.
- **send.** A WSGI application result (a WebOb response, a file app) comes back behind
  a transparent :class:`wrapt.ObjectProxy` that counts its body with
  :func:`.sending.count_sent` when called; an iterable of bytes is wrapped directly.
  The receiver comes from the request argument's ``environ``; HEAD is not counted.
- **Callable kinds**: functions, methods, class and static methods (either decorator
  order), ``async def`` (``inspect.iscoroutinefunction`` stays true), generators (event
  at exhaustion, payload from ``return``), async generators (not for ``send``). wrapt
  keeps ``__name__``, ``__doc__``, ``__wrapped__`` and the signature.
- **Enabling.** ``enabled=False`` returns the handler itself (zero overhead); a
  callable is asked on every call. Kit failures are logged, never raised.
- **Not the middleware.** Decorators see handler calls, not HTTP exchanges: statuses
  made outside a handler (an unrouted 404, a 405) emit nothing, and metadata comes from
  ``lookup`` rather than a GET subrequest; payloads match when ``lookup`` returns the
  record the API's GET renders (``tests/test_decorators_parity.py``).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from typing import Any, TypeVar, Union, cast, overload

import wrapt
from webob import Response

from . import events as ev
from ._member_steps import MemberDelete, MemberStep
from ._steps import Call, Lookup, Options, PayloadFn, Step
from .images import deleted_image
from .lifecycle import emit_prepare, status_unchanged, upload_events
from .notifier import Notifier
from .sending import count_result, refused_send

__all__ = ["Instrumentation", "instrument_class"]

log = logging.getLogger("instrument.decorators")

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)
Enabled = Union[bool, Callable[[], bool], None]  # noqa: UP007 - a runtime alias on 3.10


class _Delete(Step):
    """image.delete: the image is read before the handler removes it."""

    def before(self, call: Call) -> None:
        if self.notifier.is_enabled(self.event) and self.options.payload is None:
            call.before = self.argument_image(call)

    def payload(self, call: Call, result: Any) -> Any:
        image = call.before if call.before is not None else super().payload(call, result)
        return deleted_image(image) if isinstance(image, Mapping) else image


class _StatusAction(Step):
    """image.update of deactivate/reactivate, only when the image's status changed."""

    def before(self, call: Call) -> None:
        if self.notifier.is_enabled(self.event):  # also with payload=: it only shapes
            call.before = self.argument_image(call)

    def succeeded(self, call: Call, result: Any) -> None:
        if not self.notifier.is_enabled(self.event):
            return
        after = self.argument_image(call) if self.options.payload is not None else None
        image = self.payload(call, result)
        if not status_unchanged(call.before, after if after is not None else image):
            self.notifier.info(self.event, image)


class _Upload(Step):
    """image.prepare before the handler; image.upload, then image.activate if active."""

    def before(self, call: Call) -> None:
        # Also with image.prepare disabled, unless image.upload is too: whether the
        # store is touched decides the priority of a failed upload.
        if not any(map(self.notifier.is_enabled, (ev.IMAGE_PREPARE, ev.IMAGE_UPLOAD))):
            return
        image = self.argument_image(call)
        if image is None and self.options.lookup is not None and self.image_id(call):
            return  # unknown image: the upload will fail before the store is touched
        known = isinstance(image, Mapping) and set(image) != {"id"}  # not a bare-id stub
        image = image if isinstance(image, Mapping) else {"id": self.image_id(call)}
        call.prepared = emit_prepare(self.notifier, image, known=known)

    def succeeded(self, call: Call, result: Any) -> None:
        if not any(map(self.notifier.is_enabled, (ev.IMAGE_UPLOAD, ev.IMAGE_ACTIVATE))):
            return
        image = self.payload(call, result)
        events = upload_events(image) if isinstance(image, Mapping) else [ev.IMAGE_UPLOAD]
        for event_type in events:
            self.notifier.info(event_type, image)


class _Send(Step):
    """image.send: count the body the handler returns while it is sent."""

    def after(self, call: Call, result: Any) -> Any:
        environ = _environ_of(call)
        if _is_head(environ) or not self.notifier.is_enabled(ev.IMAGE_SEND):
            return result
        if isinstance(result, Response) and not 200 <= result.status_code < 300:
            self.outcome(call, result, result)
            return result
        image = self.argument_image(call) or {}
        return count_result(
            result,
            self.notifier,
            image_id=self.image_id(call) or image.get("id"),
            owner_id=image.get("owner"),
            size=image.get("size") if isinstance(image.get("size"), int) else None,
            environ=environ,
        )

    def succeeded(self, call: Call, result: Any) -> None:
        """Nothing: the counter reports what was sent."""

    def failed(self, call: Call, problem: str, code: int) -> None:
        environ = _environ_of(call)
        if not _is_head(environ):
            refused_send(self.notifier, self.image_id(call), environ, code)


class _StepDecorator:
    """``@hooks.create`` or ``@hooks.create(image="id", ...)``."""

    __slots__ = ("_event", "_hooks", "_kind")

    def __init__(self, hooks: Instrumentation, kind: type[Step], event: str) -> None:
        self._hooks, self._kind, self._event = hooks, kind, event

    @overload
    def __call__(self, wrapped: F, /) -> F: ...
    @overload
    def __call__(
        self,
        wrapped: None = None,
        /,
        *,
        payload: PayloadFn | None = None,
        image: str | None = None,
        lookup: Lookup = None,
        member: str | None = None,
        enabled: Enabled = None,
    ) -> Callable[[F], F]: ...
    def __call__(self, wrapped: Any = None, /, *, enabled: Enabled = None, **options: Any) -> Any:
        decorate = self._hooks.decorator(self._kind, self._event, Options(**options), enabled)
        return decorate if wrapped is None else decorate(wrapped)


class Instrumentation:
    """Decorators bound to *notifier*; *enabled* is the default of their ``enabled=``."""

    def __init__(self, notifier: Notifier, *, enabled: Enabled = None) -> None:
        self.notifier, self.enabled = notifier, enabled
        self.create = _StepDecorator(self, Step, ev.IMAGE_CREATE)
        self.update = _StepDecorator(self, Step, ev.IMAGE_UPDATE)
        self.status_action = _StepDecorator(self, _StatusAction, ev.IMAGE_UPDATE)
        self.delete = _StepDecorator(self, _Delete, ev.IMAGE_DELETE)
        self.upload = _StepDecorator(self, _Upload, ev.IMAGE_UPLOAD)
        self.send = _StepDecorator(self, _Send, ev.IMAGE_SEND)
        self.member_create = _StepDecorator(self, MemberStep, ev.IMAGE_MEMBER_CREATE)
        self.member_update = _StepDecorator(self, MemberStep, ev.IMAGE_MEMBER_UPDATE)
        self.member_delete = _StepDecorator(self, MemberDelete, ev.IMAGE_MEMBER_DELETE)

    def emits(
        self,
        event_type: str,
        /,
        *,
        payload: PayloadFn | None = None,
        image: str | None = None,
        lookup: Lookup = None,
        enabled: Enabled = None,
    ) -> Callable[[F], F]:
        """Emit *event_type* after the handler (INFO, or WARN/ERROR when it fails)."""
        return self.decorator(Step, event_type, Options(payload, image, lookup), enabled)

    def step(self, name: str) -> _StepDecorator:
        """The decorator of a step name (``"upload"``) or an event type (``"image.foo"``)."""
        found = getattr(self, name, None) if name in _STEPS else None
        return found if isinstance(found, _StepDecorator) else _StepDecorator(self, Step, name)

    def decorator(
        self, kind: type[Step], event: str, options: Options, enabled: Enabled
    ) -> Callable[[F], F]:
        flag = _guarded(self.enabled if enabled is None else enabled)

        def decorate(wrapped: F) -> F:
            step = kind(self.notifier, event, options, wrapped)
            return cast(F, wrapt.decorator(enabled=flag)(_runner(step, wrapped))(wrapped))

        return decorate


_MEMBER_STEPS = ("member_create", "member_update", "member_delete")
_STEPS = frozenset(
    {"create", "update", "status_action", "delete", "upload", "send", *_MEMBER_STEPS}
)


def instrument_class(
    target: Notifier | Instrumentation, steps: Mapping[str, str], **options: Any
) -> Callable[[C], C]:
    """Decorate the methods named in *steps* (``{"upload": "upload", "show": "image.x"}``).

    *options* go to every step; ``image=`` only to the methods that have that argument.
    """
    hooks = target if isinstance(target, Instrumentation) else Instrumentation(target)

    def decorate(cls: C) -> C:
        for name, step in steps.items():
            method = inspect.getattr_static(cls, name)
            kwargs = dict(options)
            for argument in ("image", "member"):
                if argument in kwargs and not _has_argument(method, kwargs[argument]):
                    del kwargs[argument]
            setattr(cls, name, hooks.step(step)(**kwargs)(method))
        return cls

    return decorate


def _runner(step: Step, wrapped: Any) -> Callable[..., Any]:
    function = getattr(wrapped, "__func__", wrapped)
    if inspect.isasyncgenfunction(function) and isinstance(step, _Send):
        raise TypeError("send cannot count an async generator; return an iterable of bytes")
    for test, runner in _RUNNERS:
        if test(function) and not (runner is _iterated and isinstance(step, _Send)):
            return functools.partial(runner, step)
    return functools.partial(_called, step)


def _called(step: Step, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    record = step.begin(instance, args, kwargs)
    try:
        result = wrapped(*args, **kwargs)
    except Exception as exc:
        step.fail(record, exc)
        raise
    return step.end(record, result)


async def _awaited(step: Step, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    record = step.begin(instance, args, kwargs)
    try:
        result = await wrapped(*args, **kwargs)
    except Exception as exc:
        step.fail(record, exc)
        raise
    return step.end(record, result)


def _iterated(
    step: Step, wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Generator[Any, Any, Any]:
    record = step.begin(instance, args, kwargs)
    try:
        result = yield from wrapped(*args, **kwargs)
    except Exception as exc:
        step.fail(record, exc)
        raise
    step.end(record, result)
    return result


async def _aiterated(
    step: Step, wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> AsyncIterator[Any]:
    """The handler's async generator, passed through as ``yield from`` would: what is
    sent, thrown or closed reaches the handler (async generators have no ``yield from``)."""
    record = step.begin(instance, args, kwargs)
    handler = wrapped(*args, **kwargs)
    try:
        item = await handler.__anext__()
        while True:
            try:
                sent = yield item
            except GeneratorExit:
                await handler.aclose()
                raise
            except BaseException as thrown:  # athrow(): the handler decides
                item = await handler.athrow(thrown)
            else:
                item = await handler.asend(sent)
    except StopAsyncIteration:
        step.end(record, None)
    except Exception as exc:
        step.fail(record, exc)
        raise


def _guarded(flag: Enabled) -> Enabled:
    """An ``enabled=`` callable that raises is logged and counts as off: the handler
    still runs, undecorated."""
    if not callable(flag):
        return flag
    check = flag

    def enabled() -> bool:
        try:
            return bool(check())
        except Exception:
            log.exception("instrument: the enabled= callable failed; notifications are off")
            return False

    return enabled


_RUNNERS: tuple[tuple[Callable[[Any], bool], Callable[..., Any]], ...] = (
    (inspect.iscoroutinefunction, _awaited),
    (inspect.isasyncgenfunction, _aiterated),
    (inspect.isgeneratorfunction, _iterated),
)


def _environ_of(call: Call) -> dict[str, Any] | None:
    for value in (*call.args, *call.kwargs.values()):
        environ = getattr(value, "environ", None)
        if isinstance(environ, dict):
            return environ
    return None


def _is_head(environ: Mapping[str, Any] | None) -> bool:
    return environ is not None and environ.get("REQUEST_METHOD") == "HEAD"


def _has_argument(method: Any, name: str) -> bool:
    function = getattr(method, "__func__", method)
    return name in inspect.signature(function).parameters
