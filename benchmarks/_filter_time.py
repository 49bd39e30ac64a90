"""The filter's own CPU inside a server process: its calls' thread time minus the app's.

A server's CPU per request cannot resolve a cost of a few percent from one run to the
next; this can. :func:`install` wraps :class:`~instrument.middleware.NotificationMiddleware`
so that each call is timed with :func:`time.thread_time` (other threads do not count),
and so is each call of the application inside it; the difference is the filter's own.

- A list body (JSON answers) is finished when the call returns. A streamed body (a
  download) is iterated after it, by the server, and closed later: that part is not
  in these figures.
- A metadata lookup the filter makes counts as the application's (it is the app's
  work, and the benchmarks count lookups on their own). Application calls outside any
  filter call (the import follower's thread) are neither.
- Nothing is written per request: the hook costs the server four clock readings and
  two lock round trips.

``bench_load.py``'s application imports this module and reads :func:`totals`.
``bench_glance.py`` writes its source, with a call of :func:`install`, as the
``sitecustomize`` of Glance's worker, where a GET of a path ending in :data:`PATH`
answers the totals (``"calls seconds"``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

PATH = "/_bench/filter-time"

_clock = time.thread_time
_lock = threading.Lock()  # += on shared numbers is not atomic across threads
_inside = threading.local()  # set while this thread is in a filter call
_calls = [0]
_seconds = [0.0, 0.0]  # in the filter's calls, in the application's inside them
_installed = [False]


def totals() -> tuple[int, float]:
    """Calls of the filter so far, and the CPU seconds they took themselves."""
    with _lock:
        return _calls[0], _seconds[0] - _seconds[1]


def _timed_app(app: Any) -> Any:
    def call(environ: Any, start_response: Any) -> Any:
        if not getattr(_inside, "call", False):
            # Not inside a filter call (the import follower's own thread): nothing to
            # subtract it from.
            return app(environ, start_response)
        began = _clock()
        try:
            return app(environ, start_response)
        finally:
            spent = _clock() - began
            with _lock:
                _seconds[1] += spent

    return call


def install() -> None:
    """Time every NotificationMiddleware built from now on (once per process)."""
    from instrument import middleware  # only in the server: clients need PATH alone

    if _installed[0]:
        return
    _installed[0] = True
    filter_class = middleware.NotificationMiddleware
    init, call = filter_class.__init__, filter_class.__call__

    def timed_init(self: Any, app: Any, *args: Any, **kwargs: Any) -> None:
        init(self, _timed_app(app), *args, **kwargs)

    def timed_call(self: Any, environ: Any, start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").endswith(PATH):
            start_response("200 OK", [("Content-Type", "text/plain")])
            calls, own = totals()
            return [f"{calls} {own}".encode()]
        _inside.call = True
        began = _clock()
        try:
            return call(self, environ, start_response)
        finally:
            spent = _clock() - began
            _inside.call = False
            with _lock:
                _calls[0] += 1
                _seconds[0] += spent

    filter_class.__init__ = timed_init  # type: ignore[method-assign]
    filter_class.__call__ = timed_call  # type: ignore[method-assign]
