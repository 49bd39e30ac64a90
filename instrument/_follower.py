"""Following image imports to their end, off the request path.

An import request is answered ``202`` at once; the import runs later in the application.
The middleware hands each accepted import to an :class:`ImportFollower` (a dict append
under a lock: the response never waits) and one daemon thread per process learns how it
ended, through the application itself, as internal subrequests with the importer's
identity (a copy of the request's environ, see :mod:`instrument._subrequest`):

1. ``GET /v2/images/{id}/tasks``: the import task (matched by the request's id when the
   context has one, else the oldest import task created since the request arrived that
   no other import of this process took) until it is ``success`` or ``failure``;
2. then ``GET /v2/images/{id}``, and :func:`instrument._imports.import_outcome` says
   what to emit.

A lookup the application fails (a 5xx, an exception) is asked again later, as an import
that has not ended; only a 401, 403 or 404 (the image went, or no tasks API) ends the
following at once. An image about to be deleted through this filter is asked about at
once (:meth:`ImportFollower.settle`): once it is gone, how its import ended cannot be
read any more.

Bounded, because an import may take hours or never end and must not cost the service:

- subrequests per second (*lookups_per_second*, token bucket shared by all imports);
  each import is asked again after a delay growing from 1 s to 30 s;
- each import is followed at most *timeout* seconds, and at most *max_followed* at once;
- what it gives up on (timed out, too many, the application refused the lookup, the
  process exiting) is counted in :meth:`ImportFollower.stats` and logged
  (rate-limited), never retried.

The thread starts with the first import a process sees (so a pre-forking server's
workers each get their own) and only exists while there is something to follow.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import datetime as _dt
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final

from ._imports import ImportRequest, import_outcome
from ._ratelimit import RateLimitedLog
from ._subrequest import WSGIApp, get_document, subrequest_environ
from .images import notification_image
from .notifier import Notifier

__all__ = ["ImportFollower"]

log = logging.getLogger("instrument.imports")
_rate_limited = RateLimitedLog(log)

_FIRST_DELAY: Final = 1.0
_MAX_DELAY: Final = 30.0
_ENDED: Final = frozenset({"success", "failure"})
#: Answers that end the following at once: the image is gone, or not the caller's to see.
_REFUSED: Final = ("401", "403", "404")
#: Ids of tasks whose import ended, remembered so that a later import does not take one.
_ENDED_TASKS_KEPT: Final = 256


@dataclasses.dataclass(slots=True)
class _Watch:
    image_id: str
    environ: dict[str, Any]
    image_path: str
    request: ImportRequest
    since: float  # wall clock of the request, to tell this import's task from older ones
    request_id: str | None
    deadline: float
    due: float
    delay: float = _FIRST_DELAY
    task_id: str | None = None  # the task, once found


class ImportFollower:
    """Learn how accepted imports ended and emit what that means (see the module doc)."""

    def __init__(
        self,
        app: WSGIApp,
        notifier: Notifier,
        *,
        timeout: float = 3600.0,
        lookups_per_second: float = 2.0,
        max_followed: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not lookups_per_second > 0:  # also NaN
            raise ValueError(f"lookups_per_second must be above 0, not {lookups_per_second!r}")
        self._app, self._notifier = app, notifier
        self._timeout, self._rate, self._max = timeout, lookups_per_second, max_followed
        self._clock = clock
        self._lock = threading.Lock()
        self._polling = threading.Lock()  # one poll at a time: the thread's or a settle's
        self._wake = threading.Event()
        self._watches: list[_Watch] = []
        self._ended_tasks: collections.deque[str] = collections.deque(maxlen=_ENDED_TASKS_KEPT)
        self._tokens, self._refilled = 1.0, clock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._counts = dict.fromkeys(("followed", "ended", "gave_up", "lookups"), 0)
        if hasattr(os, "register_at_fork"):
            forget = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: (method := forget()) and method())
        at_exit = weakref.WeakMethod(self.give_up_all)
        atexit.register(lambda: (method := at_exit()) and method("the process is exiting"))

    def _after_fork_in_child(self) -> None:
        """A forked child follows none of the parent's imports (the parent reports them),
        with locks of its own (a parent thread may have held one at ``fork()``)."""
        self._lock = threading.Lock()
        self._polling = threading.Lock()
        self._wake = threading.Event()
        self._watches = []
        self._thread = None

    def follow(self, environ: Mapping[str, Any], image_path: str, request: ImportRequest) -> None:
        """Start following the import of the image at *image_path* (the request thread)."""
        image_id = image_path.rstrip("/").rpartition("/")[2]
        now = self._clock()
        watch = _Watch(
            image_id,
            subrequest_environ(environ, "GET", image_path),
            image_path,
            request,
            request.asked_at or time.time(),
            _request_id(environ),
            now + self._timeout,
            now + _FIRST_DELAY,
        )
        with self._lock:
            if len(self._watches) >= self._max:
                self._give_up(watch, f"{self._max} imports are followed already")
                return
            self._watches.append(watch)
            self._counts["followed"] += 1
        self._ensure_thread()

    def step(self) -> float:
        """Poll every import that is due, as the rate allows; seconds until the next is due."""
        now = self._clock()
        self._tokens = min(1.0, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        with self._lock:
            expired = [w for w in self._watches if now >= w.deadline]
            due = sorted((w for w in self._watches if w.due <= now), key=lambda w: w.due)
        for watch in expired:
            self._forget(watch, f"not ended after {self._timeout:g}s")
        for watch in due:
            if watch in expired:
                continue
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                with self._polling:
                    self._poll(watch, now)
        with self._lock:
            if not self._watches:
                return _MAX_DELAY
            wait = min(w.due for w in self._watches) - self._clock()
        return max(wait, (1.0 - self._tokens) / self._rate if self._tokens < 1.0 else 0.0)

    def settle(self, image_id: str | None) -> None:
        """Ask now how the imports of *image_id* are going (it is about to be deleted:
        once it is gone, its tasks cannot be read). Outside the rate: a delete of an
        image being followed is rare, and its events are lost otherwise."""
        with self._lock:
            watches = [w for w in self._watches if w.image_id == image_id]
        for watch in watches:
            with self._polling:
                self._poll(watch, self._clock())

    def give_up_all(self, why: str) -> None:
        """Stop following every import, counted and logged (the process is exiting)."""
        with self._lock:
            watches, self._watches = self._watches, []
            for watch in watches:
                self._give_up(watch, why)

    def stats(self) -> dict[str, int]:
        """``followed``, ``ended`` (events emitted), ``gave_up``, ``lookups``, ``following``."""
        with self._lock:
            return {**self._counts, "following": len(self._watches)}

    def _poll(self, watch: _Watch, now: float) -> None:
        """Ask how *watch*'s import is going; emit and forget it if it ended (lock
        ``_polling`` held, so that a settle and the thread never both report it)."""
        with self._lock:
            if watch not in self._watches:
                return  # ended, or given up, meanwhile
        try:
            task = self._task(watch)
        except _Refused as refused:
            self._forget(watch, str(refused))
            return
        except Exception:
            log.warning(
                "instrument: import lookup of image %s failed", watch.image_id, exc_info=True
            )
            task = None
        # An import that ended well whose image cannot be read now is asked again.
        image = self._image(watch) if task is not None and task.get("status") in _ENDED else None
        if (
            task is None
            or task.get("status") not in _ENDED
            or (image is None and task.get("status") == "success")
        ):
            watch.due, watch.delay = now + watch.delay, min(watch.delay * 1.5, _MAX_DELAY)
            return
        if not self._forget(watch, None):
            return  # given up meanwhile (its deadline, the exit): counted and logged so
        for priority, event, payload in import_outcome(watch.request, task, image):
            self._notifier.notify(priority, event, payload)

    def _task(self, watch: _Watch) -> Mapping[str, Any] | None:
        status, document = self._get(watch, f"{watch.image_path}/tasks")
        if status.startswith(_REFUSED):
            raise _Refused(f"GET {watch.image_path}/tasks answered {status}")
        if not status.startswith("2"):
            log.info("instrument: GET %s/tasks answered %s", watch.image_path, status)
            return None
        tasks = document.get("tasks") if isinstance(document, dict) else None
        with self._lock:
            taken = {w.task_id for w in self._watches if w is not watch and w.task_id}
            taken.update(self._ended_tasks)
        task = _this_import(tasks if isinstance(tasks, list) else [], watch, taken)
        if task is not None and watch.task_id is None:
            watch.task_id = str(task.get("id"))
        return task

    def _image(self, watch: _Watch) -> dict[str, Any] | None:
        try:
            status, document = self._get(watch, watch.image_path)
        except Exception:
            log.warning(
                "instrument: lookup of imported image %s failed", watch.image_id, exc_info=True
            )
            return None
        if not (status.startswith("2") and isinstance(document, dict) and "id" in document):
            return None
        return {**notification_image(document), "stores": document.get("stores")}

    def _get(self, watch: _Watch, path: str) -> tuple[str, Any]:
        with self._lock:
            self._counts["lookups"] += 1
        return get_document(self._app, watch.environ, path)

    def _forget(self, watch: _Watch, gave_up: str | None) -> bool:
        """Stop following *watch*, counted as ended or given up (*gave_up* says why);
        False if it was not followed any more (a settle and the thread, the exit)."""
        with self._lock:
            if watch not in self._watches:
                return False
            self._watches.remove(watch)
            if watch.task_id is not None:
                self._ended_tasks.append(watch.task_id)
            if gave_up is None:
                self._counts["ended"] += 1
            else:
                self._give_up(watch, gave_up)
            return True

    def _give_up(self, watch: _Watch, why: str) -> None:
        """Count and log an import whose end will not be reported (lock held)."""
        self._counts["gave_up"] += 1
        _rate_limited.log(
            "gave-up",
            logging.WARNING,
            "instrument: not following the import of image %s (%s): its image.prepare, "
            "image.upload and image.activate are not sent",
            watch.image_id,
            why,
        )

    def _ensure_thread(self) -> None:
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if alive and self._pid == os.getpid():
                self._wake.set()
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="instrument-imports", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                wait = self.step()
            except Exception:  # never let the thread die with imports still followed
                log.exception("instrument: following imports failed")
                wait = _FIRST_DELAY
            with self._lock:
                if not self._watches:
                    self._thread = None
                    return
            self._wake.wait(min(wait, _MAX_DELAY))
            self._wake.clear()


class _Refused(Exception):
    """The application refused to show the import (the image went, or no tasks API)."""


def _this_import(tasks: list[Any], watch: _Watch, taken: set[str]) -> Mapping[str, Any] | None:
    """The import task of *watch*: the one found before, else by request id, else the
    oldest created since the request arrived (a second's slack) that is not *taken*."""
    imports = [t for t in tasks if isinstance(t, dict) and t.get("type") == "api_image_import"]
    if watch.task_id is not None:
        return next((t for t in imports if str(t.get("id")) == watch.task_id), None)
    if watch.request_id:
        for task in imports:
            if task.get("request_id") == watch.request_id:
                return task
    recent = [
        t for t in imports if _created(t) >= int(watch.since) - 1 and str(t.get("id")) not in taken
    ]
    return min(recent, key=_created, default=None)


def _created(task: Mapping[str, Any]) -> float:
    text = str(task.get("created_at") or "")[:19]
    try:
        moment = _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return 0.0
    return moment.replace(tzinfo=_dt.timezone.utc).timestamp()


def _request_id(environ: Mapping[str, Any]) -> str | None:
    """The request id an OpenStack context gives the request (Glance stores it on its task)."""
    adhoc = environ.get("webob.adhoc_attrs")
    context = adhoc.get("context") if isinstance(adhoc, dict) else None
    request_id = getattr(context, "request_id", None)
    return request_id if isinstance(request_id, str) else None
