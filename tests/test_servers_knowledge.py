"""What instrument._servers knows of WSGI servers, seen through its Counter protocol."""

from __future__ import annotations

import gzip
import io
import logging
import os
import socket
import threading
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from instrument import Notifier, count_sent
from instrument._connection import connection
from instrument._servers import Progress, counted_file_wrapper
from instrument.strategies.memory import MemoryStrategy


class RecordingCounter:
    """A :class:`instrument._servers.Counter` that remembers what the server reported."""

    def __init__(self, iterable: Iterable[bytes]) -> None:
        self.iterable = iterable
        self.closed_with: list[Progress | None] = []

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.iterable)

    def __next__(self) -> bytes:
        raise StopIteration

    def close_with(self, progress: Progress | None) -> None:
        self.closed_with.append(progress)


class PreparedBuffer:
    """Shaped like waitress's ReadOnlyFileBasedBuffer: prepare() then remain."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.remain = 0

    def prepare(self, size: int | None = None) -> int:
        self.remain = self.size
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


class Sealed:
    """A file wrapper class that refuses to be subclassed."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("sealed")

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        return iter([self.data])


def counted(body: Any, file_wrapper: Any) -> tuple[Any, list[RecordingCounter]]:
    made: list[RecordingCounter] = []

    def factory(iterable: Iterable[bytes]) -> RecordingCounter:
        made.append(RecordingCounter(iterable))
        return made[-1]

    return counted_file_wrapper(body, {"wsgi.file_wrapper": file_wrapper}, factory), made


def test_only_an_instance_of_the_servers_class_is_kept() -> None:
    assert counted_file_wrapper([b"x"], None, RecordingCounter) is None
    assert counted_file_wrapper([b"x"], {}, RecordingCounter) is None
    assert counted([b"x"], PreparedBuffer)[0] is None


def test_a_prepared_buffer_reports_prepare_minus_remain_to_its_counter() -> None:
    body, made = counted(PreparedBuffer(10), PreparedBuffer)
    assert isinstance(body, PreparedBuffer)
    assert body.prepare(None) == 10
    body.remain = 4
    body.close()  # type: ignore[attr-defined]
    assert [counter.closed_with for counter in made] == [[(6, False)]]


class InMemoryWrapper:
    """A PEP 333 style file wrapper around something the kernel cannot sendfile."""

    def __init__(self, filelike: Any) -> None:
        self.filelike = filelike

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


def test_a_wrapper_without_bookkeeping_reports_nothing_seen() -> None:
    body, made = counted(InMemoryWrapper(io.BytesIO(b"abc")), InMemoryWrapper)
    assert isinstance(body, InMemoryWrapper)
    body.close()  # type: ignore[attr-defined]
    assert [counter.closed_with for counter in made] == [[None]]


def test_a_class_that_cannot_be_subclassed_is_counted_by_iteration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory = MemoryStrategy()
    with caplog.at_level(logging.WARNING, logger="instrument.servers"):
        body = count_sent(
            Sealed(b"abc"),
            Notifier(memory, publisher_id="test"),
            image_id="s",
            expected=3,
            environ={"wsgi.file_wrapper": Sealed},
        )
        assert list(body) == [b"abc"]
    assert [n.priority for n in memory.notifications] == ["INFO"]
    assert any("cannot subclass" in r.getMessage() for r in caplog.records)


def test_a_wrapper_that_cannot_be_subclassed_is_cut_at_the_promised_length() -> None:
    # mod_wsgi's FileWrapper (a C type) iterates to the end of the file; mod_wsgi
    # itself sends only Content-Length (a Range), so that is what is counted.
    memory = MemoryStrategy()
    environ = {"wsgi.file_wrapper": Sealed}
    notifier = Notifier(memory, publisher_id="test")
    body = count_sent(Sealed(b"abcdef"), notifier, image_id="s", expected=4, environ=environ)
    assert list(body) == [b"abcd"]
    body = count_sent(Sealed(b"ab"), notifier, image_id="s", expected=0, environ=environ)
    assert list(body) == []
    sent = [(n.priority, n.payload["bytes_sent"]) for n in memory.notifications]
    assert sent == [("INFO", 4), ("INFO", 0)]


def opaque_wrapper(file: Any, block_size: int = 8192) -> Any:
    """uWSGI's ``wsgi.file_wrapper``: a function that returns the file itself."""
    return file


def test_a_file_from_an_opaque_wrapper_is_read_in_blocks_up_to_the_promised_length() -> None:
    from instrument._servers import FILE_BLOCK, file_blocks

    data = b"line\n" * FILE_BLOCK
    file = io.BytesIO(data)
    file.fileno = lambda: 0  # type: ignore[method-assign]  # looks like a real file
    blocks = file_blocks(file, {"wsgi.file_wrapper": opaque_wrapper}, FILE_BLOCK + 3)
    chunks = list(blocks)
    assert [len(chunk) for chunk in chunks] == [FILE_BLOCK, 3]
    assert b"".join(chunks) == data[: FILE_BLOCK + 3]
    blocks.close()  # type: ignore[attr-defined]
    assert file.closed
    # Anything that is not a plain file, or a server whose wrapper is a class: unchanged.
    assert file_blocks([b"x"], {"wsgi.file_wrapper": opaque_wrapper}, None) == [b"x"]
    assert file_blocks(file, {"wsgi.file_wrapper": InMemoryWrapper}, None) is file


def test_the_connection_is_reached_through_each_servers_environ_key() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        served, _ = listener.accept()
        with client, served:
            for environ in (
                {"gunicorn.socket": served},
                {"eventlet.input": types.SimpleNamespace(_sock=served)},  # eventlet.wsgi
            ):
                found = connection(environ)
                assert found is not None and found.reading() is not None
                found.close()
            assert connection({"eventlet.input": io.BytesIO()}) is None  # no socket there
            assert served.fileno() >= 0  # the kit closed its duplicate, not the server's


def test_uwsgi_sends_itself_only_a_whole_file_as_promised(tmp_path: Path) -> None:
    # uWSGI's sendfile path sends a file from byte 0 to its size, whatever its position,
    # Content-Length or Range (instrument._uwsgi): anything else is the counter's to send.
    from instrument._uwsgi import whole_file_size

    path = tmp_path / "image"
    path.write_bytes(b"abcdef")
    with open(path, "rb") as file:
        assert whole_file_size(file, 6) == whole_file_size(file, None) == 6
        assert whole_file_size(file, 4) is None  # fewer bytes promised than it holds
        file.seek(2)
        assert whole_file_size(file, 4) is None  # a Range
    read_end, write_end = os.pipe()
    with open(read_end, "rb") as pipe, open(write_end, "wb"):
        assert whole_file_size(pipe, None) is None  # not a regular file


def test_uwsgi_is_given_no_file_object_that_reads_other_bytes_than_its_descriptor(
    tmp_path: Path,
) -> None:
    from instrument._uwsgi import PLAIN_FILES

    path = tmp_path / "image.gz"
    with gzip.open(path, "wb") as compressing:
        compressing.write(b"abcdef")
    with gzip.open(path, "rb") as decompressing, open(path, "rb") as plain:
        assert decompressing.fileno() >= 0  # it has a descriptor, of the compressed file
        assert not isinstance(decompressing, PLAIN_FILES)
        assert isinstance(plain, PLAIN_FILES)


def test_uwsgi_offload_threads_are_read_from_its_options() -> None:
    from instrument._uwsgi import offload_threads

    assert not offload_threads({})
    assert not offload_threads({"offload-threads": b"0", "processes": b"4"})
    assert offload_threads({"offload-threads": b"2"})
    assert offload_threads({"offload-thread": b"1"})
    assert not offload_threads({"offload-threads": [b"2", b"0"]})  # the last one counts


def test_what_the_connection_was_given_is_exact_while_the_client_acknowledges() -> None:
    # The acknowledged count and the send queue come from two system calls; read apart,
    # an acknowledgement between them made "given" short (measured: 0.6% of readings).
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        served, _ = listener.accept()
        with client, served:
            reader = threading.Thread(target=_drain, args=(client,), daemon=True)
            reader.start()
            found = connection({"gunicorn.socket": served})
            assert found is not None
            written, chunk, wrong = 0, b"x" * 65536, []
            for _ in range(10000):
                served.sendall(chunk)
                written += len(chunk)
                reading = found.reading()
                if reading is None or reading[1] != written:
                    wrong.append((written, reading))
            found.close()
            served.shutdown(socket.SHUT_WR)
            reader.join(timeout=10)
    assert wrong == []


def _drain(sock: socket.socket) -> None:
    buffer = bytearray(1 << 20)
    while sock.recv_into(buffer):
        pass
