"""Journal segments on disk: the record framing, and a cursor that reads and acknowledges.

Decisions:

* **A record is one line**: ``<crc32 of the body, 8 hex digits> <JSON body>\\n``. JSON
  has no raw newline, so a line is a record; the checksum tells a complete record from
  a torn or corrupt one, which is skipped and counted, never sent, never blocking the
  records after it. Bytes after the last newline of the segment being written are a
  record still being written; in a segment nobody writes any more they are torn.
* **Segments** are ``<seq>.seg`` files (12 digits) in the journal's directory, written
  in order; a new one starts when the current one is large (the worker rotates).
* **The acknowledgement** is one ``(segment, offset)`` pair, the first byte not yet
  confirmed by the broker, written with ``pwrite`` to the journal's ``ack`` file after
  every confirmed batch: a killed process re-sends at most the batch in flight.
  Segments before it are deleted. The worker fsyncs the ack with the segments.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Callable
from typing import Final, NamedTuple

__all__ = ["Cursor", "Position", "frame", "segment_name", "segment_seqs"]

_ACK: Final = struct.Struct("<QQ")
_SUFFIX: Final = ".seg"
_MIN_READ: Final = 64 * 1024


class Position(NamedTuple):
    """A place in a journal: segment number and byte offset in it."""

    seq: int
    offset: int


def frame(body: bytes) -> bytes:
    """The journal record of *body* (UTF-8 JSON without raw newlines)."""
    return b"%08x %s\n" % (zlib.crc32(body), body)


def segment_name(seq: int) -> str:
    return f"{seq:012d}{_SUFFIX}"


def segment_seqs(directory: str) -> list[int]:
    """The segment numbers present in *directory*, in order."""
    names = (name for name in os.listdir(directory) if name.endswith(_SUFFIX))
    return sorted(int(name[: -len(_SUFFIX)]) for name in names if name[:-4].isdigit())


def _unframe(line: bytes) -> bytes | None:
    """The body of a record line (without its newline), or None when it is damaged."""
    body = line[9:]
    if len(line) < 10 or line[8:9] != b" " or line[:8] != b"%08x" % zlib.crc32(body):
        return None
    return body


class Cursor:
    """Reads one journal's records from its acknowledged position on; used by one thread.

    *final* says the journal has no writer any more (adopted): bytes left after the
    last record of its last segment are then a torn record, counted as damaged.
    """

    def __init__(
        self,
        directory: str,
        *,
        final: bool,
        live: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.directory = directory
        self.final = final
        self._live = live  # the writer: (segment being written, end of complete records)
        self._ack_fd = os.open(
            os.path.join(directory, "ack"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        raw = os.pread(self._ack_fd, _ACK.size, 0)
        self.acked = Position(*_ACK.unpack(raw)) if len(raw) == _ACK.size else Position(0, 0)
        self.read_at = self.acked
        self._segments = [seq for seq in segment_seqs(directory) if seq >= self.acked.seq]
        self._fds: dict[int, int] = {}

    def add_segment(self, seq: int) -> None:
        """The writer started segment *seq*."""
        self._segments.append(seq)

    def read(self, limit: int) -> tuple[list[bytes | None], Position]:
        """Up to *limit* records from the read position (None for a damaged one).

        Returns them with the position after the last; :meth:`ack` it once they are
        confirmed. The read position moves on at once: the caller keeps the batch.
        """
        records: list[bytes | None] = []
        writing, stop = self._follow()
        while len(records) < limit and self._segments:
            seq = self._segments[0]
            offset = self.read_at.offset if self.read_at.seq == seq else 0
            end = stop if seq == writing else None
            used, tail = self._lines(seq, offset, limit - len(records), records, end)
            self.read_at = Position(seq, offset + used)
            if (
                len(records) < limit
                and tail is not None
                and not self._next(seq, tail, records, writing)
            ):
                break
        return records, self.read_at

    def _follow(self) -> tuple[int, int]:
        """The writer's segment and end; segments it started are added to the list."""
        if self._live is None:
            return -1, 0
        writing, stop = self._live()
        if not self._segments:  # the first look: what the writer made so far
            found = segment_seqs(self.directory)
            self._segments = [seq for seq in found if self.acked.seq <= seq < writing]
        first = self._segments[-1] + 1 if self._segments else writing
        self._segments.extend(range(first, writing + 1))
        return writing, stop

    def _lines(
        self, seq: int, offset: int, wanted: int, records: list[bytes | None], stop: int | None
    ) -> tuple[int, int | None]:
        """Append up to *wanted* records of segment *seq* from *offset* (up to *stop*).

        Returns the bytes used and, when the end of the data was reached (the file's
        end, the unwritten zeros of an allocated segment, or *stop*), how many bytes
        after the last complete record remain (else None).
        """
        try:
            fd = self._fd(seq)
        except FileNotFoundError:  # a number reserved, never allocated (disk full): empty
            return 0, 0
        size = max(_MIN_READ, wanted * 1024)
        while True:
            want = size if stop is None else min(size, stop - offset)
            chunk = os.pread(fd, want, offset)
            zero = chunk.find(b"\0")
            ended = len(chunk) < size or zero >= 0
            chunk = chunk if zero < 0 else chunk[:zero]
            end = chunk.rfind(b"\n") + 1
            if end or ended:
                break
            size *= 2  # one record longer than the chunk: read more
        lines = chunk[:end].split(b"\n")[:-1]
        used = 0
        for line in lines[:wanted]:
            records.append(_unframe(line))
            used += len(line) + 1
        at_end = ended and len(lines) <= wanted
        return used, (len(chunk) - used if at_end else None)

    def _next(self, seq: int, tail: int, records: list[bytes | None], writing: int) -> bool:
        """At the end of segment *seq*: move on if nobody writes it any more.

        *writing* is the writer's segment when this read began, not now: a segment read
        up to the writer's end of then may have gained records since, before the writer
        moved on. It is left for the next read, which sees it finished and reads it to
        its end.
        """
        # The writer's own segments are known from it: files numbered beyond them may be
        # spares allocated ahead, which say nothing about this one being finished.
        later = writing > seq if self._live is not None else len(self._segments) > 1
        if later and len(self._segments) == 1:
            self._segments.append(seq + 1)
        if not (later or self.final):
            return False  # the segment being written: more may come
        if tail:
            records.append(None)  # a record cut short (disk full, or killed mid-write)
        self._segments.pop(0)
        self.read_at = Position(self._segments[0] if later else seq + 1, 0)
        return True

    def ack(self, position: Position) -> None:
        """Everything before *position* is confirmed: record it, delete finished segments."""
        os.pwrite(self._ack_fd, _ACK.pack(*position), 0)
        self.acked = position
        for seq in [seq for seq in self._fds if seq < position.seq]:
            os.close(self._fds.pop(seq))
            self._unlink(segment_name(seq))

    def count(self) -> int:
        """How many records (damaged ones too) lie after the acknowledged position."""
        total = 0
        for seq in self._segments:
            offset = self.acked.offset if seq == self.acked.seq else 0
            fd, last = self._fd(seq), b"\n"
            while chunk := os.pread(fd, 1 << 20, offset):
                zero = chunk.find(b"\0")
                chunk = chunk if zero < 0 else chunk[:zero]
                total += chunk.count(b"\n")
                offset += len(chunk)
                last = chunk[-1:] or last
                if zero >= 0:
                    break
            total += last != b"\n"
        return total

    def rewind(self) -> None:
        """Read again from the acknowledged position, as a journal nobody writes."""
        self.final, self._live = True, None
        self.read_at = self.acked
        known = set(self._segments) | set(self._fds)  # open files outlive a deleted directory
        self._segments = sorted(seq for seq in known if seq >= self.acked.seq)

    def hold(self, seq: int, fd: int) -> None:
        """Read segment *seq* through a duplicate of *fd* (its path may be gone)."""
        if seq not in self._fds:
            self._fds[seq] = os.dup(fd)

    def holds(self, seq: int) -> bool:
        """Whether segment *seq*'s file is open here (readable if its path is gone)."""
        return seq in self._fds

    def holding(self) -> int:
        """How many segment files are open here."""
        return len(self._fds)

    @property
    def exhausted(self) -> bool:
        """A final journal read to its end."""
        return self.final and not self._segments

    def fsync(self) -> None:
        os.fsync(self._ack_fd)

    def remove(self) -> None:
        """Delete the journal's files (all confirmed); the caller removes the lock last."""
        for seq in segment_seqs(self.directory):
            self._unlink(segment_name(seq))
        self._unlink("ack")
        self.close()

    def close(self) -> None:
        """Close the files (never raises)."""
        for fd in [self._ack_fd, *self._fds.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def _fd(self, seq: int) -> int:
        fd = self._fds.get(seq)
        if fd is None:
            fd = self._fds[seq] = os.open(
                os.path.join(self.directory, segment_name(seq)), os.O_RDONLY | os.O_CLOEXEC
            )
        return fd

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, name))
