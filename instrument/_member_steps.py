"""The member steps of :mod:`instrument.decorators`: image.member.create, update and delete.

Decisions (the payload is Glance's, :func:`instrument.images.member_payload`:
``image_id``, ``member_id``, ``status``, ``created_at``, ``updated_at``, ``deleted``,
``deleted_at``):

- **INFO payload**: ``payload(result)`` if given (sent as given, redacted); else the
  result when it is a member (a mapping, dataclass or ``to_dict()`` object with a string
  ``member_id``, or a WebOb response with a v2 member JSON body); else the member
  ``lookup(image_id, member_id)`` finds (a callable, or the name of a method of the
  handler's instance); else the two ids alone. ``image=`` and ``member=`` name the
  handler's arguments holding them.
- **member_delete** reads the member *before* the handler removes it (Glance's payload
  shows it as it was, then ``deleted`` true and ``deleted_at`` now), as the filter asks
  the application before a ``DELETE``; without ``lookup`` it has the ids only.
- **Failures** are the step's event at WARN (4xx) or ERROR (5xx, exceptions) with the
  text payload naming the image, as for every step (:class:`instrument._steps.Step`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from webob import Response

from ._steps import Argument, Call, Options, Step
from .images import deleted_member, member_from_body, member_payload
from .notifier import Notifier
from .payloads import mapping_of

__all__ = ["MemberDelete", "MemberStep"]

log = logging.getLogger("instrument.decorators")


class MemberStep(Step):
    """image.member.create / image.member.update: the member after the handler."""

    def __init__(self, notifier: Notifier, event: str, options: Options, wrapped: Any) -> None:
        super().__init__(notifier, event, options, wrapped)
        self.member_argument = Argument(wrapped, options.member)

    def payload(self, call: Call, result: Any) -> Any:
        if self.options.payload is not None:
            return self.options.payload(result)
        return _member_of(result) or self.looked_up(call) or self.ids(call)

    def looked_up(self, call: Call) -> dict[str, Any] | None:
        """The member ``lookup(image_id, member_id)`` finds, in Glance's shape; else None."""
        lookup, image_id, member_id = self.options.lookup, self.image_id(call), self.member_id(call)
        if lookup is None or image_id is None or member_id is None:
            return None
        try:
            find = getattr(call.instance, lookup) if isinstance(lookup, str) else lookup
            return _member_of(find(image_id, member_id))
        except Exception:
            log.warning(
                "instrument: lookup of member %s of image %s failed",
                member_id,
                image_id,
                exc_info=True,
            )
            return None

    def ids(self, call: Call) -> dict[str, Any]:
        return {"image_id": self.image_id(call), "member_id": self.member_id(call)}

    def member_id(self, call: Call) -> str | None:
        value = self.member_argument.value(call)
        return value if value is None or isinstance(value, str) else str(value)


class MemberDelete(MemberStep):
    """image.member.delete: the member as it was before the handler removed it."""

    def before(self, call: Call) -> None:
        if self.notifier.is_enabled(self.event) and self.options.payload is None:
            call.before = self.looked_up(call)

    def payload(self, call: Call, result: Any) -> Any:
        if self.options.payload is not None:
            return self.options.payload(result)
        member: Mapping[str, Any] = call.before or _member_of(result) or self.ids(call)
        return deleted_member(member)


def _member_of(value: Any) -> dict[str, Any] | None:
    if isinstance(value, Response):
        return member_from_body(value.body) if "json" in (value.content_type or "") else None
    return member_payload(mapping_of(value))
