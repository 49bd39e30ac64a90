"""Compare one step's kit notifications with Glance's own, and name every difference.

:func:`differences` returns codes such as ``priority:image.upload:ERROR->WARN`` or
``kit-only-key:image.send:destination_ip``. :data:`KNOWN` classifies the codes this
comparison has met against Glance 33: ``allowed`` differences are documented in
docs/glance.md (the kit is right, or the difference is a stated limitation); ``kit-bug``
differences were fixed in the kit and are no longer tolerated. Any other difference
fails the test.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .scenario import Step

TIMESTAMPS = frozenset({"created_at", "updated_at", "deleted_at"})
#: What a degraded kit payload (metadata lookup failed) still carries.
_ID_ONLY = frozenset({"id", "status", "deleted", "deleted_at"})
LOOKUP_FAILED = re.compile(r"metadata lookup for image \S+ (answered [45]\d\d|failed)")


@dataclass(frozen=True)
class Verdict:
    kind: str  # "allowed"
    why: str


KNOWN: dict[str, Verdict] = {
    # Glance 33's multi-store extras: which store, import progress. Not visible over HTTP.
    "glance-only-key:image.prepare:backend": Verdict(
        "allowed", "limitation: the store Glance picks is not in the request or response"
    ),
    "glance-only-key:image.*:os_glance_importing_to_stores": Verdict(
        "allowed", "Glance 33 multi-store extra (empty list outside image import)"
    ),
    "glance-only-key:image.*:os_glance_failed_import": Verdict(
        "allowed", "Glance 33 multi-store extra (empty list outside image import)"
    ),
    # The kit keeps these v2 core fields; Glance's format_image_notification() drops them.
    "kit-only-key:image.*:os_hash_algo": Verdict("allowed", "kit sends a superset"),
    "kit-only-key:image.*:os_hash_value": Verdict("allowed", "kit sends a superset"),
    "kit-only-key:image.*:os_hidden": Verdict("allowed", "kit sends a superset"),
    "kit-only-key:image.send:destination_ip": Verdict(
        "allowed", "in the spec's image.send payload; Glance 33 omits it"
    ),
}


#: Allowed only in a step where both sides report an aborted download (ERROR image.send).
KNOWN_IN_ABORTS: dict[str, Verdict] = {
    "field:image.send:bytes_sent": Verdict(
        "allowed",
        "Glance counts what it read from its cache file, the kit what the client's TCP "
        "acknowledged (never more than Glance's count)",
    ),
}


def _aborted_on_both_sides(step: Step) -> bool:
    def errors(events: list[dict[str, Any]]) -> bool:
        return any(e["event_type"] == "image.send" and e["priority"] == "ERROR" for e in events)

    return errors(step.native) and errors(step.kit)


def verdict(code: str, step: Step) -> Verdict | None:
    """The classification of *code* met in *step*, or None when it is unexplained."""
    known = dict(KNOWN)
    if _aborted_on_both_sides(step):
        known.update(KNOWN_IN_ABORTS)
    for pattern, found in known.items():
        if fnmatch.fnmatchcase(code, pattern):
            return found
    return None


def glance_status_writes(step: Step) -> list[dict[str, Any]]:
    """Glance's image.update for the status writes its upload controller makes."""
    if not step.upload:
        return []
    return [
        n
        for n in step.native
        if n["event_type"] == "image.update"
        and isinstance(n["payload"], dict)
        and n["payload"].get("status") in ("queued", "saving", "uploading", "importing", "active")
    ]


def comparable_native(step: Step) -> list[dict[str, Any]]:
    skipped = {id(n) for n in glance_status_writes(step)}
    return [n for n in step.native if id(n) not in skipped]


def comparable_kit(step: Step) -> list[dict[str, Any]]:
    """The kit's events minus the kit-only ones the step declares (checked separately)."""
    expected_extra = list(step.kit_only)
    kept = []
    for event in step.kit:
        key = (event["event_type"], event["priority"])
        if key in expected_extra:
            expected_extra.remove(key)
        else:
            kept.append(event)
    return kept


def differences(step: Step) -> list[str]:
    """Every way the kit's events differ from Glance's in *step* (see the module doc)."""
    native, kit = comparable_native(step), comparable_kit(step)
    codes = [f"kit-only-event-missing:{t}/{p}" for t, p in _missing_kit_only(step)]
    native_types = [n["event_type"] for n in native]
    kit_types = [k["event_type"] for k in kit]
    codes += [f"missing:{t}" for t in native_types if t not in kit_types]
    codes += [
        f"extra:{k['event_type']}/{k['priority']}"
        for k in kit
        if k["event_type"] not in native_types
    ]
    common_native = [t for t in native_types if t in kit_types]
    common_kit = [t for t in kit_types if t in native_types]
    if common_native != common_kit:
        codes.append(f"order:{common_native}!={common_kit}")
        return codes
    for n, k in zip(
        [n for n in native if n["event_type"] in kit_types],
        [k for k in kit if k["event_type"] in native_types],
        strict=True,
    ):
        codes += _event_differences(n, k)
    return codes


def _missing_kit_only(step: Step) -> list[tuple[str, str]]:
    got = [(k["event_type"], k["priority"]) for k in step.kit]
    missing = []
    for wanted in step.kit_only:
        if wanted in got:
            got.remove(wanted)
        else:
            missing.append(wanted)
    return missing


def _event_differences(native: dict[str, Any], kit: dict[str, Any]) -> list[str]:
    event = native["event_type"]
    codes = []
    if native["priority"] != kit["priority"]:
        codes.append(f"priority:{event}:{native['priority']}->{kit['priority']}")
    n, k = native["payload"], kit["payload"]
    if isinstance(n, str) or isinstance(k, str):
        if not (isinstance(n, str) and isinstance(k, str)):
            codes.append(f"payload-shape:{event}:{type(n).__name__}->{type(k).__name__}")
        return codes  # text payloads: the wording is each side's own
    if event != "image.send" and set(k) <= _ID_ONLY and set(n) - _ID_ONLY:
        return [*codes, f"degraded-payload:{event}"]
    if event == "image.send" and n.get("owner_id") and k.get("owner_id") is None:
        codes.append(f"degraded-payload:{event}:owner_id")
        n = {key: value for key, value in n.items() if key != "owner_id"}
        k = {key: value for key, value in k.items() if key != "owner_id"}
    return codes + _field_differences(event, n, k, "")


def _field_differences(event: str, n: dict[str, Any], k: dict[str, Any], prefix: str) -> list[str]:
    codes = []
    for key in sorted(set(n) | set(k)):
        if not prefix and key in TIMESTAMPS:
            continue
        if key not in k:
            codes.append(f"glance-only-key:{event}:{prefix}{key}")
        elif key not in n:
            codes.append(f"kit-only-key:{event}:{prefix}{key}")
        elif key == "properties" and isinstance(n[key], dict) and isinstance(k[key], dict):
            codes += _field_differences(event, n[key], k[key], "properties.")
        elif n[key] != k[key]:
            codes.append(f"field:{event}:{prefix}{key}")
    return codes


def describe(events: list[dict[str, Any]], skipped: frozenset[int] = frozenset()) -> str:
    """``image.upload INFO (active)`` items for the comparison table; † marks *skipped*."""
    if not events:
        return "—"
    parts = []
    for event in events:
        payload = event["payload"]
        if isinstance(payload, str):
            detail = "text"
        elif event["event_type"] == "image.send":
            detail = f"bytes_sent={payload.get('bytes_sent')}"
        elif set(payload) <= _ID_ONLY:
            detail = "id only"
        else:
            detail = str(payload.get("status"))
        mark = " †" if id(event) in skipped else ""
        parts.append(f"{event['event_type']} {event['priority']} ({detail}){mark}")
    return "<br>".join(parts)


def summary(step: Step) -> str:
    """Kit bugs and unexplained codes in full; allowed ones as +kit / -Glance / ≠value."""
    full, keys = [], []
    for code in differences(step):
        known = verdict(code, step)
        if known is None or known.kind != "allowed":
            label = "kit bug" if known else "UNEXPLAINED"
            if f"`{code}` ({label})" not in full:
                full.append(f"`{code}` ({label})")
            continue
        side, _, rest = code.partition(":")
        key = rest.partition(":")[2]
        short = {"kit-only-key": "+", "glance-only-key": "-"}.get(side, "≠") + key
        if short not in keys:
            keys.append(short)
    allowed = [f"allowed: {', '.join(keys)}"] if keys else []
    return "<br>".join(full + allowed) or "none"


def table(steps: list[Step]) -> str:
    rows = [
        "| step | client action | Glance 33 native | instrument | differences |",
        "|---|---|---|---|---|",
    ]
    for step in steps:
        skipped = frozenset(id(n) for n in glance_status_writes(step))
        rows.append(
            f"| {step.name} | {step.action} | {describe(step.native, skipped)} "
            f"| {describe(step.kit)} | {summary(step)} |"
        )
    return "\n".join(rows)


def published_table(steps: list[Step], variable: str) -> dict[str, Step]:
    """Print the comparison (and write it to ``$variable`` if set); the steps by name."""
    comparison = table(steps)
    print(f"\n{comparison}\n")
    target = os.environ.get(variable)
    if target:
        Path(target).write_text(comparison + "\n")
    return {step.name: step for step in steps}


def assert_explained(step: Step) -> None:
    """Every difference between the kit and Glance in *step* has a verdict."""
    unexplained = [code for code in differences(step) if verdict(code, step) is None]
    assert not unexplained, (
        f"{step.name}: unexplained differences {unexplained}\n"
        f"Glance: {step.native}\nkit: {step.kit}\nGlance log:\n{step.glance_log[-3000:]}"
    )
