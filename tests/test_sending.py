"""The image.send byte counter against the PEP 3333 contract, without a network."""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import wsgiref.handlers
import wsgiref.util
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from gunicorn.http.wsgi import FileWrapper as GunicornFileWrapper
from hypothesis import given
from hypothesis import strategies as st
from waitress.buffers import ReadOnlyFileBasedBuffer

from instrument import Notifier
from instrument._servers import warn_opaque
from instrument._settling import settler
from instrument.sending import SendCounter, count_sent, expected_length, warn_proxied
from instrument.strategies.memory import MemoryStrategy

IDENTITY = {
    "HTTP_X_TENANT_ID": "tenant-1",
    "HTTP_X_USER_ID": "user-1",
    "REMOTE_ADDR": "192.0.2.7",
}


def payload(bytes_sent: int) -> dict[str, Any]:
    return {
        "image_id": "img-1",
        "owner_id": "owner-1",
        "receiver_tenant_id": "tenant-1",
        "receiver_user_id": "user-1",
        "destination_ip": "192.0.2.7",
        "bytes_sent": bytes_sent,
    }


@pytest.fixture
def memory() -> MemoryStrategy:
    return MemoryStrategy()


@pytest.fixture
def notifier(memory: MemoryStrategy) -> Notifier:
    return Notifier(memory, publisher_id="test")


def sends(memory: MemoryStrategy) -> list[tuple[str, Any]]:
    return [(n.priority, n.payload) for n in memory.notifications if n.event_type == "image.send"]


class Closing:
    """An application iterable that is its own iterator and counts close() calls."""

    def __init__(self, chunks: Iterable[bytes], fail_at: int | None = None) -> None:
        self.chunks = list(chunks)
        self.position = 0
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.position == self.fail_at:
            raise RuntimeError("backend failed")
        if self.position >= len(self.chunks):
            raise StopIteration
        self.position += 1
        return self.chunks[self.position - 1]

    def close(self) -> None:
        self.closed += 1


class ClosingList(list[bytes]):
    closed = 0

    def close(self) -> None:
        self.closed += 1


def environ(**extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = dict(IDENTITY, QUERY_STRING="", **extra)
    wsgiref.util.setup_testing_defaults(env)
    return env


def make_app(body: Callable[[dict[str, Any]], Iterable[bytes]], notifier: Notifier, length: int):
    def app(env: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(length))]
        start_response("200 OK", headers)
        expected = expected_length("200 OK", headers, None)
        return count_sent(
            body(env),
            notifier,
            image_id="img-1",
            owner_id="owner-1",
            expected=expected,
            environ=env,
        )

    return validator(app)


def serve(app: Any, env: dict[str, Any], chunks: int | None = None) -> bytes:
    """Act as a server: iterate (all, or *chunks* chunks), then always close()."""
    received = []
    result = app(env, lambda status, headers, exc_info=None: None)
    try:
        for index, chunk in enumerate(result):
            if chunks is not None and index >= chunks:
                break
            received.append(chunk)
    finally:
        result.close()
    return b"".join(received)


CHUNKS = [b"a" * 10, b"b" * 20, b"c" * 30]


def test_list_body_complete_is_info_with_all_bytes(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    body = ClosingList(CHUNKS)
    assert serve(make_app(lambda env: body, notifier, 60), environ()) == b"".join(CHUNKS)
    assert body.closed == 1
    assert sends(memory) == [("INFO", payload(60))]


def test_the_answer_to_a_head_request_is_not_an_image_sent(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    """gunicorn 27 drops the body of a HEAD answer; counted, it was INFO at full size."""
    body = ClosingList(CHUNKS)
    env = environ()
    env["REQUEST_METHOD"] = "HEAD"
    assert count_sent(body, notifier, image_id="img-1", expected=60, environ=env) is body
    assert sends(memory) == []


def test_downloads_through_a_reverse_proxy_say_the_connection_is_the_proxys(
    notifier: Notifier, memory: MemoryStrategy, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection read is then the proxy's, whose buffers take a whole image."""
    warn_proxied.done = False
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        served, _ = listener.accept()
        with client, served:
            env = {"gunicorn.socket": served, "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
            with caplog.at_level(logging.WARNING, "instrument.sending"):
                for _ in range(2):
                    body = count_sent([b"x"], notifier, image_id="img-1", environ=env)
                    for chunk in body:  # as the server would
                        served.sendall(chunk)
                        assert client.recv(1) == chunk
                    body.close()  # type: ignore[attr-defined]
                assert settler().settled(timeout=10)
    assert caplog.text.count("the TCP connection the kit reads is the proxy's") == 1
    assert [s for s, _ in sends(memory)] == ["INFO", "INFO"]


def test_generator_body_complete_runs_its_finally_once(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    finished = []

    def generate(env: dict[str, Any]) -> Iterator[bytes]:
        try:
            yield from CHUNKS
        finally:
            finished.append(True)

    serve(make_app(generate, notifier, 60), environ())
    assert finished == [True]
    assert sends(memory) == [("INFO", payload(60))]


def test_own_iterator_closed_early_is_error_with_bytes_handed_over(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    body = Closing(CHUNKS)
    serve(make_app(lambda env: body, notifier, 60), environ(), chunks=1)
    assert body.closed == 1
    # The server pulled two chunks (one it kept, one at which it stopped): both handed over.
    assert sends(memory) == [("ERROR", payload(30))]


def test_never_iterated_then_closed_emits_error_and_closes(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    body = Closing(CHUNKS)
    result = count_sent(
        body, notifier, image_id="img-1", owner_id="owner-1", expected=60, environ=environ()
    )
    result.close()  # type: ignore[attr-defined]
    assert body.closed == 1
    assert sends(memory) == [("ERROR", payload(0))]


def test_never_started_generator_is_closed_and_reported(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    def generate() -> Iterator[bytes]:
        yield b"x"

    body = generate()
    result = count_sent(body, notifier, image_id="img-1", expected=1)
    result.close()  # type: ignore[attr-defined]
    assert body.gi_frame is None
    assert [priority for priority, _ in sends(memory)] == ["ERROR"]


def test_raising_body_emits_error_then_reraises_the_same_exception(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    body = Closing(CHUNKS, fail_at=2)
    result = count_sent(
        body, notifier, image_id="img-1", owner_id="owner-1", expected=60, environ=environ()
    )
    iterator = iter(result)
    assert next(iterator) + next(iterator) == CHUNKS[0] + CHUNKS[1]
    with pytest.raises(RuntimeError, match="backend failed"):
        next(iterator)
    assert sends(memory) == [("ERROR", payload(30))]
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]
    assert body.closed == 1
    assert len(sends(memory)) == 1


def test_close_twice_closes_the_application_iterable_once(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    body = Closing(CHUNKS)
    result = count_sent(body, notifier, image_id="img-1", expected=60)
    assert b"".join(result) == b"".join(CHUNKS)
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]
    assert body.closed == 1
    assert [priority for priority, _ in sends(memory)] == ["INFO"]


def test_failing_iter_reaches_the_server_which_closes_once(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    """iter() of the app's iterable is app code: it fails where the server iterates."""

    class Broken(ClosingList):
        def __iter__(self) -> Iterator[bytes]:
            raise OSError("store unreachable")

    body = Broken()
    counted = count_sent(body, notifier, image_id="img-1", expected=10)
    with pytest.raises(OSError, match="store unreachable"):
        for _chunk in counted:  # what a server does
            pass
    counted.close()  # type: ignore[attr-defined]  # and then it closes
    counted.close()  # type: ignore[attr-defined]
    assert body.closed == 1
    assert [(p, b["bytes_sent"]) for p, b in sends(memory)] == [("ERROR", 0)]


def test_short_body_is_error_even_when_exhausted(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    result = count_sent([b"abc"], notifier, image_id="img-1", expected=10)
    assert list(result) == [b"abc"]
    assert [(p, b["bytes_sent"]) for p, b in sends(memory)] == [("ERROR", 3)]


def test_unknown_length_is_info_only_when_exhausted(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    done = count_sent([b"abc", b"de"], notifier, image_id="done")
    assert list(done) == [b"abc", b"de"]
    cut = count_sent([b"abc", b"de"], notifier, image_id="cut")
    next(iter(cut))
    cut.close()  # type: ignore[attr-defined]
    assert [(p, b["image_id"], b["bytes_sent"]) for p, b in sends(memory)] == [
        ("INFO", "done", 5),
        ("ERROR", "cut", 3),
    ]


def test_nothing_is_buffered(notifier: Notifier) -> None:
    pulled = []

    def generate() -> Iterator[bytes]:
        for chunk in CHUNKS:
            pulled.append(chunk)
            yield chunk

    result = iter(count_sent(generate(), notifier, image_id="img-1"))
    assert pulled == []
    next(result)
    assert pulled == [CHUNKS[0]]


def test_len_passes_through_only_when_the_body_has_one(notifier: Notifier) -> None:
    assert len(count_sent([b"whole body"], notifier, image_id="i")) == 1  # type: ignore[arg-type]
    assert not hasattr(count_sent(iter([b"x"]), notifier, image_id="i"), "__len__")


def test_explicit_receiver_values_override_environ(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    env = {"HTTP_X_PROJECT_ID": "project-9", "HTTP_X_USER_ID": "u", "REMOTE_ADDR": "10.0.0.1"}
    list(count_sent([b"x"], notifier, image_id="a", environ=env))
    list(
        count_sent(
            [b"x"], notifier, image_id="b", environ=env, receiver_user_id="me", destination_ip="::1"
        )
    )
    first, second = (p for _, p in sends(memory))
    assert (first["receiver_tenant_id"], first["receiver_user_id"], first["destination_ip"]) == (
        "project-9",
        "u",
        "10.0.0.1",
    )
    assert (second["receiver_user_id"], second["destination_ip"]) == ("me", "::1")


def test_failing_notifier_never_reaches_the_server() -> None:
    class Exploding(Notifier):
        def error(self, event_type: str, payload: Any) -> None:
            raise RuntimeError("notifier broken")

    body = Closing(CHUNKS)
    result = count_sent(body, Exploding(), image_id="img-1", expected=60)
    result.close()  # type: ignore[attr-defined]
    assert body.closed == 1


@given(
    chunks=st.lists(st.binary(max_size=64), max_size=12),
    stop=st.integers(min_value=0, max_value=13),
)
def test_bytes_sent_is_what_was_handed_over(chunks: list[bytes], stop: int) -> None:
    memory = MemoryStrategy()
    body = Closing(chunks)
    result = count_sent(body, Notifier(memory), image_id="i", expected=sum(map(len, chunks)))
    handed = []
    for index, chunk in enumerate(result):
        handed.append(chunk)
        if index + 1 >= stop:
            break
    result.close()  # type: ignore[attr-defined]
    complete = stop > len(chunks) or (not chunks)
    [sent] = memory.notifications
    assert body.closed == 1
    assert sent.payload["bytes_sent"] == sum(map(len, handed))
    assert sent.priority == ("INFO" if complete else "ERROR")


# expected_length ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "size", "expected"),
    [
        ("200 OK", [("Content-Length", "42")], 100, 42),
        ("200 OK", [], 100, 100),
        ("200 OK", [("content-length", "nope")], 100, 100),
        ("206 Partial Content", [("Content-Range", "bytes 10-19/100")], 100, 10),
        ("206 Partial Content", [("Content-Range", "bytes 0-0/*")], None, 1),
        (
            "206 Partial Content",
            [("Content-Length", "5"), ("Content-Range", "bytes 0-9/10")],
            10,
            5,
        ),
        ("206 Partial Content", [("Content-Type", "multipart/byteranges; boundary=x")], 100, None),
        ("200 OK", [], None, None),
    ],
)
def test_expected_length(
    status: str, headers: list[tuple[str, str]], size: int | None, expected: int | None
) -> None:
    assert expected_length(status, headers, size) == expected


# wsgi.file_wrapper -------------------------------------------------------------


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "image.bin"
    path.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    return path


def opened(path: Path, offset: int = 0) -> io.BufferedReader:
    """A file handed to a file wrapper; whoever closes the wrapper closes it."""
    file = open(path, "rb")  # noqa: SIM115
    file.seek(offset)
    return file


class TrackedFile(io.FileIO):
    closes = 0

    def close(self) -> None:
        if not self.closed:
            type(self).closes += 1
        super().close()


@pytest.mark.parametrize("validated", [True, False])
def test_wsgiref_handler_iterates_its_file_wrapper_and_counts(
    validated: bool, notifier: Notifier, memory: MemoryStrategy, image: Path
) -> None:
    size = image.stat().st_size
    seen = []

    def app(env: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        )
        body = env["wsgi.file_wrapper"](opened(image), 65536)
        result = count_sent(body, notifier, image_id="img-1", expected=size, environ=env)
        seen.append(isinstance(result, env["wsgi.file_wrapper"]))
        return result

    out, errors = io.BytesIO(), io.StringIO()
    handler = wsgiref.handlers.SimpleHandler(
        io.BytesIO(), out, errors, environ(), multithread=False
    )
    handler.run(validator(app) if validated else app)
    assert out.getvalue().endswith(image.read_bytes()), errors.getvalue()
    # The server's own class is kept (wsgiref has no zero-copy path and iterates it).
    assert seen == [True]
    assert [(p, b["bytes_sent"]) for p, b in sends(memory)] == [("INFO", size)]


def test_file_wrapper_result_is_an_instance_of_the_servers_class(
    notifier: Notifier, image: Path
) -> None:
    for cls in (GunicornFileWrapper, ReadOnlyFileBasedBuffer, wsgiref.util.FileWrapper):
        results = [
            count_sent(
                cls(opened(image)), notifier, image_id="i", environ={"wsgi.file_wrapper": cls}
            )
            for _ in range(2)
        ]
        assert all(isinstance(result, cls) for result in results)
        assert type(results[0]) is type(results[1])
        for result in results:
            result.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "cls", [GunicornFileWrapper, ReadOnlyFileBasedBuffer, wsgiref.util.FileWrapper]
)
def test_iterated_file_wrapper_counts_and_closes_the_file_once(
    cls: type, notifier: Notifier, memory: MemoryStrategy, image: Path
) -> None:
    TrackedFile.closes = 0
    body = cls(TrackedFile(image, "rb"), 65536)
    result = count_sent(
        body,
        notifier,
        image_id="i",
        expected=image.stat().st_size,
        environ={"wsgi.file_wrapper": cls},
    )
    assert b"".join(result) == image.read_bytes()
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]
    assert TrackedFile.closes == 1
    assert [(p, b["bytes_sent"]) for p, b in sends(memory)] == [("INFO", image.stat().st_size)]


def gunicorn_sendfile(wrapper: Any, count: int | None, peer_reads: int | None = None) -> bytes:
    """What gunicorn's Response.sendfile does with a file wrapper, over a socketpair."""
    ours, theirs = socket.socketpair()
    received = bytearray()

    def drain() -> None:
        while peer_reads is None or len(received) < peer_reads:
            data = theirs.recv(65536)
            if not data:
                break
            received.extend(data)
        theirs.close()

    reader = threading.Thread(target=drain)
    reader.start()
    fileno = wrapper.filelike.fileno()
    offset = os.lseek(fileno, 0, os.SEEK_CUR)
    try:
        ours.sendfile(wrapper.filelike, offset=offset, count=count)
        os.lseek(fileno, offset, os.SEEK_SET)
    except OSError:
        pass
    finally:
        ours.close()
        reader.join()
        wrapper.close()
    return bytes(received)


def test_gunicorn_sendfile_path_is_counted_from_what_sendfile_reported(
    notifier: Notifier, memory: MemoryStrategy, image: Path
) -> None:
    data = image.read_bytes()
    env = {"wsgi.file_wrapper": GunicornFileWrapper}
    whole = count_sent(
        GunicornFileWrapper(opened(image)),
        notifier,
        image_id="whole",
        expected=len(data),
        environ=env,
    )
    assert gunicorn_sendfile(whole, len(data)) == data
    ranged_file = opened(image, 1000)
    ranged = count_sent(
        GunicornFileWrapper(ranged_file), notifier, image_id="range", expected=5000, environ=env
    )
    assert gunicorn_sendfile(ranged, 5000) == data[1000:6000]
    eof = count_sent(GunicornFileWrapper(opened(image)), notifier, image_id="eof", environ=env)
    assert gunicorn_sendfile(eof, None) == data
    assert [(p, b["image_id"], b["bytes_sent"]) for p, b in sends(memory)] == [
        ("INFO", "whole", len(data)),
        ("INFO", "range", 5000),
        ("INFO", "eof", len(data)),
    ]


def test_gunicorn_sendfile_cut_short_is_error_with_partial_count(
    notifier: Notifier, memory: MemoryStrategy, image: Path
) -> None:
    env = {"wsgi.file_wrapper": GunicornFileWrapper}
    size = image.stat().st_size
    result = count_sent(
        GunicornFileWrapper(opened(image)), notifier, image_id="i", expected=size, environ=env
    )
    gunicorn_sendfile(result, size, peer_reads=100_000)
    [(priority, body)] = sends(memory)
    assert priority == "ERROR"
    assert 0 <= body["bytes_sent"] < size


def test_gunicorn_wrapper_closed_without_sending_is_error_zero(
    notifier: Notifier, memory: MemoryStrategy, image: Path
) -> None:
    env = {"wsgi.file_wrapper": GunicornFileWrapper}
    result = count_sent(
        GunicornFileWrapper(opened(image)), notifier, image_id="i", expected=10, environ=env
    )
    result.close()  # type: ignore[attr-defined]
    assert [(p, b["bytes_sent"]) for p, b in sends(memory)] == [("ERROR", 0)]


def waitress_channel(
    buffer: Any, content_length: int | None, stop_after: int | None = None
) -> bytes:
    """What waitress's task and channel do with a ReadOnlyFileBasedBuffer."""
    sent = bytearray()
    if buffer.prepare(content_length):
        while len(buffer) > 0 and (stop_after is None or len(sent) < stop_after):
            chunk = buffer.get(8192)
            sent.extend(chunk)
            buffer.skip(len(chunk), True)
    buffer.close()
    return bytes(sent)


def test_waitress_zero_copy_path_is_counted_from_remain(
    notifier: Notifier, memory: MemoryStrategy, image: Path
) -> None:
    data = image.read_bytes()
    env = {"wsgi.file_wrapper": ReadOnlyFileBasedBuffer}
    whole = count_sent(
        ReadOnlyFileBasedBuffer(opened(image)),
        notifier,
        image_id="whole",
        expected=len(data),
        environ=env,
    )
    assert waitress_channel(whole, len(data)) == data
    cut = count_sent(
        ReadOnlyFileBasedBuffer(opened(image)),
        notifier,
        image_id="cut",
        expected=len(data),
        environ=env,
    )
    assert waitress_channel(cut, len(data), stop_after=16384) == data[:16384]
    unknown = count_sent(
        ReadOnlyFileBasedBuffer(opened(image)), notifier, image_id="unknown", environ=env
    )
    assert waitress_channel(unknown, None) == data
    assert [(p, b["image_id"], b["bytes_sent"]) for p, b in sends(memory)] == [
        ("INFO", "whole", len(data)),
        ("ERROR", "cut", 16384),
        ("INFO", "unknown", len(data)),
    ]


def test_generic_counter_is_used_for_plain_iterables(notifier: Notifier) -> None:
    assert isinstance(
        count_sent(
            iter([b"x"]), notifier, image_id="i", environ={"wsgi.file_wrapper": GunicornFileWrapper}
        ),
        SendCounter,
    )


def test_next_on_the_counter_itself_counts_and_reports(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    body = Closing(CHUNKS, fail_at=1)
    result = count_sent(
        body, notifier, image_id="img-1", owner_id="owner-1", expected=60, environ=environ()
    )
    assert next(result) == CHUNKS[0]  # type: ignore[call-overload]
    with pytest.raises(RuntimeError, match="backend failed"):
        next(result)  # type: ignore[call-overload]
    result.close()  # type: ignore[attr-defined]
    assert body.closed == 1
    assert sends(memory) == [("ERROR", payload(10))]


def test_iterating_after_exhaustion_reports_once(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    result = count_sent([b"ab", b"c"], notifier, image_id="img-1", expected=3)
    assert b"".join(result) == b"abc"
    assert list(result) == []
    result.close()  # type: ignore[attr-defined]
    assert [(p, b["bytes_sent"]) for p, b in sends(memory)] == [("INFO", 3)]


class Unseekable(io.RawIOBase):
    """A pipe-like file: waitress cannot take its zero-copy path for it."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._data.readinto(buffer)

    def seekable(self) -> bool:
        return False


def test_waitress_buffer_it_cannot_prepare_is_counted_by_iteration(
    notifier: Notifier, memory: MemoryStrategy
) -> None:
    """prepare() answers 0 for an unseekable file and waitress iterates instead."""
    env = {"wsgi.file_wrapper": ReadOnlyFileBasedBuffer}
    body = count_sent(
        ReadOnlyFileBasedBuffer(Unseekable(b"x" * 30000), 8192),
        notifier,
        image_id="pipe",
        environ=env,
    )
    assert body.prepare(None) == 0  # type: ignore[attr-defined]
    received = b""
    for chunk in body:
        received += chunk
        break  # the client went away after the first chunk
    body.close()  # type: ignore[attr-defined]
    assert [(p, b["bytes_sent"]) for p, b in sends(memory)] == [("ERROR", len(received))]


def test_a_file_wrapper_that_is_not_a_class_is_counted_and_reported_once(
    notifier: Notifier, memory: MemoryStrategy, caplog: pytest.LogCaptureFixture
) -> None:
    """uWSGI's wsgi.file_wrapper is a function: its zero-copy path cannot be kept."""

    def uwsgi_like_wrapper(file: Any, block_size: int = 8192) -> Any:
        return iter(lambda: file.read(block_size), b"")

    warn_opaque.done = False
    with caplog.at_level(logging.WARNING, logger="instrument.servers"):
        for _ in range(2):
            body = count_sent(
                [b"abc"],
                notifier,
                image_id="u",
                expected=3,
                environ={"wsgi.file_wrapper": uwsgi_like_wrapper},
            )
            assert list(body) == [b"abc"]
    assert [p for p, _ in sends(memory)] == ["INFO", "INFO"]
    assert len([r for r in caplog.records if "is not a class" in r.getMessage()]) == 1
