"""Per-call overhead of the decorators (instrument/decorators.py) over the bare handler.

Run: ``python benchmarks/bench_decorators.py [--calls N] [--rounds N]``. Every variant is
timed side by side in one run (rounds interleaved, best of N each), on a handler that
returns a small image dict, emitting ``image.create`` to the memory strategy:

- bare: the undecorated handler;
- decorated: ``@on.create``, the whole cost: payload shaping plus the Notifier's
  envelope (uuid4, timestamp, JSON-safe copy, redaction) and the strategy;
- notifier.info alone: what emitting the same payload costs without any decorator,
  so that "decorated - bare - notifier.info" is the decorator's own share;
- stub Notifier: a Notifier whose ``notify`` does nothing, so the time over bare is
  the decorator's own share (wrapt, outcome, payload shaping) without the envelope;
- event disabled in the Notifier: the decorator's path without shaping or emitting;
- enabled=callable answering False: wrapt's run-time switch;
- enabled=False: the handler itself comes back (zero overhead by construction).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from instrument import Notifier
from instrument.decorators import Instrumentation
from instrument.images import notification_image
from instrument.strategies.memory import MemoryStrategy

IMAGE = {
    "id": "8a3e2f4c-5b21-4a8f-9d8e-0c1f2a3b4c5d",
    "name": "cirros",
    "status": "active",
    "owner": "demo",
    "size": 13_287_936,
    "visibility": "shared",
    "disk_format": "qcow2",
}


def handler() -> dict[str, Any]:
    return IMAGE


class StubNotifier(Notifier):
    """Accepts every notification and does nothing with it."""

    def notify(self, priority: str, event_type: str, payload: Any) -> None:
        return None


def variants() -> dict[str, Callable[[], Any]]:
    notifier = Notifier(MemoryStrategy(memory_max=1))
    on = Instrumentation(notifier)
    shaped = notification_image(IMAGE)
    quiet = Instrumentation(Notifier(MemoryStrategy(), disabled_notifications=["image.create"]))
    return {
        "bare": handler,
        "decorated": on.create(handler),
        "notifier.info alone": lambda: notifier.info("image.create", shaped),
        "decorated, stub Notifier": Instrumentation(StubNotifier()).create(handler),
        "event disabled in Notifier": quiet.create(handler),
        "enabled=callable (False)": on.create(enabled=lambda: False)(handler),
        "enabled=False": on.create(enabled=False)(handler),
    }


def per_call(function: Callable[[], Any], calls: int) -> float:
    """Seconds per call of *function*, loop overhead included (as for the bare handler)."""
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    functions = variants()
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(args.rounds):
        for name, function in functions.items():
            best[name] = min(best[name], per_call(function, args.calls))
    bare = best["bare"]
    print(f"{args.calls} calls per round, best of {args.rounds} rounds, interleaved")
    print(f"{'variant':30} {'µs/call':>9} {'overhead µs':>12} {'ratio':>8}")
    for name, seconds in best.items():
        overhead = (seconds - bare) * 1e6
        print(f"{name:30} {seconds * 1e6:9.3f} {overhead:12.3f} {seconds / bare:8.1f}x")
    own = (best["decorated, stub Notifier"] - bare) * 1e6
    rest = (best["decorated"] - bare - best["notifier.info alone"]) * 1e6
    print(f"decorator's own share, stub Notifier: {own:.3f} µs per call (goal <= 5)")
    print(f"cross-check, decorated - bare - notifier.info alone (noisier): {rest:.3f} µs")


if __name__ == "__main__":
    main()
