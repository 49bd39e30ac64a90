"""How the command line shows notifications: a readable table row or one JSON line."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["Printer", "summary_of"]

_COLOURS = {"INFO": "\033[32m", "WARN": "\033[33m", "ERROR": "\033[31m"}
_RESET = "\033[0m"


def summary_of(payload: Any) -> str:
    """A short human description of a payload."""
    if isinstance(payload, str):
        return payload
    if not isinstance(payload, Mapping):
        return json.dumps(payload)
    if "bytes_sent" in payload:
        sent = payload["bytes_sent"]
        count = f"{sent:,}" if isinstance(sent, int) and not isinstance(sent, bool) else repr(sent)
        return f"bytes_sent={count} to {payload.get('destination_ip')}"
    parts = [
        f"{key}={payload[key]}"
        for key in ("name", "status", "size")
        if payload.get(key) is not None
    ]
    return " ".join(parts)


class Printer:
    """Print notifications (dicts in wire form) as a table or as JSON lines."""

    def __init__(
        self, stream: TextIO | None = None, *, as_json: bool = False, event: str | None = None
    ):
        self.stream = stream or sys.stdout
        self.as_json = as_json
        self.event = event
        self.count = 0
        #: The payload of the latest notification of each event type shown.
        self.last: dict[str, Any] = {}
        self._colour = hasattr(self.stream, "isatty") and self.stream.isatty()

    def header(self) -> None:
        if not self.as_json:
            self._write(
                f"{'time (UTC)':<15} {'priority':<8} {'event_type':<15} {'image':<10} detail"
            )

    def show(self, notification: Mapping[str, Any]) -> None:
        if self.event and notification.get("event_type") != self.event:
            return
        self.count += 1
        self.last[str(notification.get("event_type"))] = notification.get("payload")
        if self.as_json:
            self._write(json.dumps(notification, sort_keys=False, default=_json_default))
            return
        payload = notification.get("payload")
        image_id = ""
        if isinstance(payload, Mapping):
            image_id = str(payload.get("id") or payload.get("image_id") or "")[:8]
        priority = _printable(str(notification.get("priority")))
        shown = (
            f"{_COLOURS.get(priority, '')}{priority:<8}{_RESET}"
            if self._colour
            else f"{priority:<8}"
        )
        stamp = _printable(str(notification.get("timestamp", ""))[11:26])
        event_type = _printable(str(notification.get("event_type", "")))
        summary = _printable(summary_of(payload))
        self._write(f"{stamp:<15} {shown} {event_type:<15} {_printable(image_id):<10} {summary}")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


# Control and bidirectional characters in a payload (an image name is the user's) would
# drive the terminal: shown escaped instead, as repr() shows them.
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _printable(text: str) -> str:
    return _UNSAFE.sub(lambda match: repr(match.group())[1:-1], text)


def _json_default(value: Any) -> str:
    """What JSON cannot hold (an AMQP body may carry binary values), as text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)
