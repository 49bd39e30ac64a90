"""The pages of a journal segment's shared mapping: made durable and faulted in by range.

An append is a memory copy into a ``MAP_SHARED`` mapping (:mod:`._outbox`). The copy
stays a copy only while the page it lands on is mapped writable: the first write to a
page that is not takes a page fault in the request (3-7 us here). Two decisions keep
that off the request path:

* **Sync only what was written** (``msync(MS_SYNC)`` on the written range), never the
  whole file: writeback write-protects every page it cleans, so an ``fsync`` of the
  file also cleaned the pages allocated ahead, and the next append to each of them
  faulted (measured: one append in eleven, p99 of ``emit()`` 20 us instead of 14).
  Linux's ``msync`` is ``fdatasync`` of the range: the data and the metadata needed to
  read it back.
* **Fault the pages ahead in from the worker** (``MADV_POPULATE_WRITE``, Linux 5.14):
  a whole segment when it is allocated, and after each sync the next pages (twice
  what was appended since the last sync, at least 256 KiB), so pages the kernel's own
  writeback cleaned meanwhile are writable again before a request writes them. Only a
  window: populating a clean page dirties it, and the kernel would write the zeros of
  a whole idle segment again every 30 s.

Both go through :mod:`ctypes`, which lets the GIL go for the call: ``mmap.flush`` and
``mmap.madvise`` keep it, and would stall every request thread for the length of a
disk write or of faulting a whole segment in. Where ``libc`` cannot be loaded (not
Linux) the file is fsynced whole and pages are touched one by one.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from typing import Any, Final

__all__ = ["Pages"]

_MS_SYNC: Final = 4  # <sys/mman.h> on Linux
_MADV_POPULATE_WRITE: Final = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14


def _load_libc() -> Any:
    """``libc`` with ``msync`` and ``madvise`` typed, or None where that is not Linux's."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's
        for name in ("msync", "madvise"):
            function = getattr(libc, name)
            function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            function.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_LIBC: Final = _load_libc()


class Pages:
    """Range sync and populate for one mapping of *fd*; :meth:`release` before closing it.

    Offsets are bytes from the start of the mapping; a range's start is rounded down to
    its page, as the system calls require. One thread at a time (the journal's worker,
    or whoever owns the segment before it is shared): each call holds the buffer export
    for its own length, so a close() racing it fails with BufferError instead of
    unmapping the pages under the system call.
    """

    __slots__ = ("_fd", "_map", "_view")

    def __init__(self, mapping: mmap.mmap, fd: int) -> None:
        self._map, self._fd = mapping, fd
        # The mapping's address for the system calls: the view exports the buffer.
        self._view: Any = None
        if _LIBC is not None:
            self._view = (ctypes.c_char * len(mapping)).from_buffer(mapping)

    def sync(self, start: int, end: int) -> None:
        """Make bytes ``[start, end)`` durable; OSError when the kernel cannot."""
        start -= start % mmap.PAGESIZE
        view = self._view
        if end <= start:
            return
        if view is None:
            os.fsync(self._fd)
        elif _LIBC.msync(ctypes.addressof(view) + start, end - start, _MS_SYNC) != 0:
            raise _errno_error("msync")

    def populate(self, start: int, end: int | None = None) -> bool:
        """Fault the pages of ``[start, end)`` (to the mapping's end by default) in,
        writable; False where the kernel cannot (before Linux 5.14). Safe while appends
        go on: nothing is written."""
        start -= start % mmap.PAGESIZE
        end = len(self._map) if end is None else min(end, len(self._map))
        view = self._view
        if view is None or start >= end:
            return view is not None
        address = ctypes.addressof(view) + start
        return bool(_LIBC.madvise(address, end - start, _MADV_POPULATE_WRITE) == 0)

    def populate_new(self) -> None:
        """:meth:`populate` a mapping nobody writes yet, or else write each page once."""
        if not self.populate(0):
            for offset in range(0, len(self._map), mmap.PAGESIZE):
                self._map[offset] = 0

    def release(self) -> None:
        """Let the mapping go (it can be closed from now on)."""
        self._view = None


def _errno_error(call: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{call}: {os.strerror(code)}")
