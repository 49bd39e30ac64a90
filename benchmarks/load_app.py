"""The application ``bench_load.py`` serves: the example image API, bare or filtered.

Configured by the environment so the same module runs under waitress and gunicorn:

* ``LOAD_MODE``: ``bare`` (no filter), ``filter``, or ``reference``: no filter, but a
  pass-through that spends ``LOAD_REFERENCE_US`` microseconds of its thread's CPU per
  request (what a filter of that cost would do to the server, for scale);
* ``LOAD_DATA``: the image API's data directory;
* ``INSTRUMENT_*``: the filter's options (``INSTRUMENT_STRATEGY=rabbit`` ...).

``GET /_load/counts`` answers how many requests and internal metadata subrequests the
application saw, so the benchmark can print subrequests per request, and with the
filter its own CPU seconds so far (``filter_cpu``, see ``_filter_time.py``).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _filter_time
from examples.image_api import ImageAPI
from instrument._subrequest import SUBREQUEST_KEY
from instrument.config import Settings
from instrument.middleware import NotificationMiddleware


class Counted:
    """The image API, counting what reaches it (the kit's subrequests apart)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts = {"requests": 0, "subrequests": 0}
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        kind = "subrequests" if environ.get(SUBREQUEST_KEY) else "requests"
        with self._lock:
            self.counts[kind] += 1
        return self.app(environ, start_response)


class Spending:
    """*app* behind a pass-through that spends *microseconds* of thread CPU per call;
    ``spent`` is what it spent so far (the "filter us/req" of this mode)."""

    def __init__(self, app: Any, microseconds: float) -> None:
        self.app = app
        self.seconds = microseconds / 1e6
        self.spent = 0.0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        began = time.thread_time()
        until = began + self.seconds
        while (now := time.thread_time()) < until:
            pass
        with self._lock:
            self.spent += now - began
        return self.app(environ, start_response)


def build() -> Any:
    api = Counted(ImageAPI(os.environ.get("LOAD_DATA") or None))
    mode = os.environ.get("LOAD_MODE", "bare")
    if mode == "bare":
        served = api
    elif mode == "reference":
        served = Spending(api, float(os.environ["LOAD_REFERENCE_US"]))
    else:
        _filter_time.install()
        served = NotificationMiddleware.from_settings(api, Settings.load())

    def application(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/_load/counts":
            start_response("200 OK", [("Content-Type", "application/json")])
            _, own = _filter_time.totals()
            own = served.spent if isinstance(served, Spending) else own
            return [json.dumps({**api.counts, "filter_cpu": own}).encode()]
        return served(environ, start_response)

    return application


app = build()
