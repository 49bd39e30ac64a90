"""One step around a handler call: the part of :mod:`instrument.decorators` every step shares.

A :class:`Step` is what a decorator does around one handler: read what it needs before
the handler runs (:meth:`Step.before`), then emit the step's event after a success, or
the event at WARN/ERROR after a failure (the rules of :mod:`instrument.lifecycle`). The
payload and image rules are documented in :mod:`instrument.decorators`; the steps with
more to do (delete, upload, send, members) subclass it.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, Union, cast

from webob import Response
from webob.exc import HTTPException

from . import events as ev
from ._guard import guard
from .images import image_from_body, image_from_headers, notification_image
from .lifecycle import failure_priority, problem_of, report_failure
from .notifier import Notifier
from .payloads import image_id_of, mapping_of

__all__ = ["Argument", "Call", "Lookup", "Options", "PayloadFn", "Step", "response_image"]

log = logging.getLogger("instrument.decorators")

Lookup = Union[str, Callable[..., Any], None]  # noqa: UP007 - a runtime alias on 3.10
PayloadFn = Callable[[Any], Any]
_METADATA_EVENTS = frozenset(ev.EVENT_TYPES) - {ev.IMAGE_SEND}


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    payload: PayloadFn | None = None
    image: str | None = None
    lookup: Lookup = None
    #: Member steps only: the argument holding the member's id (the project shared with).
    member: str | None = None


class Call:
    """One handler call: what the steps read its arguments from."""

    __slots__ = ("args", "before", "instance", "kwargs", "prepared")

    def __init__(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.instance, self.args, self.kwargs = instance, args, kwargs
        self.before: Any = None
        self.prepared = False


class Argument:
    """Where a named argument (``image=``, ``member=``) sits in a call (keyword, position)."""

    __slots__ = ("default", "name", "position", "shift")

    def __init__(self, wrapped: Any, name: str | None) -> None:
        self.name, self.position, self.default, self.shift = name, None, None, 1
        if name is None:
            return
        # A bound method's own signature leaves out what it is bound to, as its calls do.
        bound = inspect.ismethod(wrapped)
        function = wrapped if bound else getattr(wrapped, "__func__", wrapped)
        self.shift = 0 if bound or isinstance(wrapped, staticmethod) else 1
        parameters = inspect.signature(function).parameters
        parameter = parameters.get(name)
        if parameter is None:
            if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
                return
            raise TypeError(f"{function.__qualname__}() has no argument {name!r}")
        if parameter.default is not parameter.empty:
            self.default = parameter.default
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            self.position = list(parameters).index(name)

    def value(self, call: Call) -> Any:
        if self.name is None:
            return None
        if self.name in call.kwargs:
            return call.kwargs[self.name]
        if self.position is None:
            return self.default
        position = self.position - (self.shift if call.instance is not None else 0)
        return call.args[position] if position < len(call.args) else self.default


class Step:
    """A lifecycle step: what happens before the handler, after success, after failure."""

    def __init__(self, notifier: Notifier, event: str, options: Options, wrapped: Any) -> None:
        self.notifier, self.event, self.options = notifier, event, options
        self.argument = Argument(wrapped, options.image)
        self.shape = event in _METADATA_EVENTS
        self.reads_before = type(self).before is not Step.before

    def begin(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
        call = Call(instance, args, kwargs)
        if self.reads_before:
            guard(self.before, call)
        return call

    def end(self, call: Call, result: Any) -> Any:
        try:
            return self.after(call, result)
        except Exception:
            log.exception("instrument: cannot notify %s; the handler is unaffected", self.event)
            return result

    def fail(self, call: Call, exc: Exception) -> None:
        if isinstance(exc, HTTPException):
            guard(self.outcome, call, exc.wsgi_response, None)
        else:
            guard(self.failed, call, problem_of(exc), 500)

    def before(self, call: Call) -> None:
        """Nothing, unless the step reads the image before the handler runs."""

    def after(self, call: Call, result: Any) -> Any:
        self.outcome(call, result, result)
        return result

    def outcome(self, call: Call, response: Any, result: Any) -> None:
        code = response.status_code if isinstance(response, Response) else 200
        if 200 <= code < 300:
            self.succeeded(call, result)
        elif code >= 400:
            self.failed(call, str(response.status), code)

    def succeeded(self, call: Call, result: Any) -> None:
        if self.notifier.is_enabled(self.event):
            self.notifier.info(self.event, self.payload(call, result))

    def failed(self, call: Call, problem: str, code: int) -> None:
        priority = failure_priority(code, self.event, call.prepared)
        report_failure(self.notifier, self.event, self.image_id(call), problem, priority)

    def payload(self, call: Call, result: Any) -> Any:
        if self.options.payload is not None:
            return self.shaped(self.options.payload(result))
        image = self.result_image(result)
        if image is None:
            image = self.argument_image(call)
        return image if image is not None else {"id": self.image_id(call)}

    def result_image(self, result: Any) -> Any:
        if isinstance(result, Response):
            return response_image(result)
        mapping = result if type(result) is dict else mapping_of(result)
        if mapping is None:
            return None
        inner = mapping.get("image")  # v1 {"image": {...}}
        if isinstance(inner, Mapping):
            mapping = inner
        return notification_image(mapping) if self.shape else mapping

    def argument_image(self, call: Call) -> Any:
        """The ``image=`` argument as an image; None when absent or unknown to ``lookup``."""
        value = self.argument.value(call)
        if value is None or not isinstance(value, (str, bytes, int)):
            return None if value is None else self.shaped(value)
        if self.options.lookup is None:
            return {"id": self.image_id(call)}
        try:
            found = self.lookup(call, value)
        except Exception:
            log.warning("instrument: lookup of image %s failed", value, exc_info=True)
            return {"id": self.image_id(call)}
        return None if found is None else self.shaped(found)

    def lookup(self, call: Call, image_id: Any) -> Any:
        lookup = self.options.lookup
        if isinstance(lookup, str):
            return getattr(call.instance, lookup)(image_id)
        return cast(Callable[[Any], Any], lookup)(image_id)

    def image_id(self, call: Call) -> str | None:
        value = self.argument.value(call)
        return str(value) if isinstance(value, int) else image_id_of(value)

    def shaped(self, value: Any) -> Any:
        mapping = mapping_of(value)
        if mapping is None or not self.shape:
            return value if mapping is None else mapping
        return notification_image(mapping)


def response_image(response: Response) -> Any:
    if "json" in (response.content_type or ""):
        return image_from_body(response.body)
    return image_from_headers(response.headerlist)
