"""The malformed-input corpus: raw HTTP requests a careless or hostile client sends.

Each case is the exact bytes put on the socket (http.client refuses most of them), in
an order that matters: the first cases create the images the later ones aim at, so
every server that receives the corpus from the start holds the same state. A case
marked ``half_close`` promises a body it never sends; the client shuts its side down
after the request so the server reads an end of file instead of waiting.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = ["CASES", "Case", "exchange"]

ACTIVE = "a0000000-0000-4000-8000-000000000001"  # created and uploaded by the corpus
QUEUED = "a0000000-0000-4000-8000-000000000002"  # created, data promised but never sent
LONG_10K = "x" * 10_000
LONG_200K = "y" * 200_000
DATA = bytes(range(256)) * 4  # the active image's 1,024 bytes


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    half_close: bool = False


def request(
    method: str | bytes,
    target: str | bytes,
    body: bytes = b"",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    *,
    length: bool = True,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """One request's bytes: Host and Connection: close always, Content-Length by default."""
    method = method.encode() if isinstance(method, str) else method
    target = target.encode() if isinstance(target, str) else target
    lines = [method + b" " + target + b" " + version, b"Host: corpus.test", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if length and (body or method in (b"POST", b"PUT", b"PATCH")):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_HEAD = b"Host: corpus.test\r\nConnection: close\r\n"
JSON = ((b"Content-Type", b"application/json"),)
PATCH = ((b"Content-Type", b"application/openstack-images-v2.1-json-patch"),)


def create(body: bytes, *extra: tuple[bytes, bytes]) -> bytes:
    return request("POST", "/v2/images", body, (*JSON, *extra))


def get(target: str | bytes, *headers: tuple[bytes, bytes]) -> bytes:
    return request("GET", target, headers=headers)


def nested(depth: int) -> bytes:
    return b'{"name": ' + b"[" * depth + b"]" * depth + b"}"


def _setup() -> list[Case]:
    return [
        Case("create", create(b'{"id": "%s", "name": "ok"}' % ACTIVE.encode())),
        Case("upload", request("PUT", f"/v2/images/{ACTIVE}/file", DATA)),
        Case("create without id", create(b'{"name": "auto"}')),
        Case("create queued", create(b'{"id": "%s"}' % QUEUED.encode())),
        Case("duplicate id", create(b'{"id": "%s"}' % ACTIVE.encode())),
    ]


def _bad_json() -> list[Case]:
    return [
        Case("truncated JSON", create(b'{"name":')),
        Case("not JSON", create(b"not json at all")),
        Case("JSON list", create(b"[1, 2, 3]")),
        Case("JSON string", create(b'"image"')),
        Case("NaN", create(b'{"name": NaN, "min_ram": 0}')),
        Case("Infinity", create(b'{"name": Infinity}')),
        Case("number overflow", create(b'{"min_disk": 1e400}')),
        Case("number as text", create(b'{"min_disk": "many"}')),
        Case("invalid UTF-8 body", create(b'{"name": "\xff\xfe\xfd"}')),
        Case("lone surrogate", create(b'{"name": "\\ud800"}')),
        Case("read-only field", create(b'{"status": "active"}')),
        Case("odd types", create(b'{"tags": "abc", "protected": {"a": 1}, "id": 123}')),
        Case("wrong content type", request("POST", "/v2/images", b'{"name": "t"}')),
        Case("empty body", create(b"")),
        Case("NUL in JSON", create(b'{"name": "a\\u0000b"}')),
    ]


def _large() -> list[Case]:
    five_mb = b"z" * (5 * 1024 * 1024)
    return [
        Case("5 MB name", create(b'{"name": "' + five_mb + b'"}')),
        Case("5 MB garbage", create(five_mb)),
        Case("900 deep", create(nested(900))),
        Case("100,000 deep", create(nested(100_000))),
        Case("10k id create", create(b'{"id": "%s"}' % LONG_10K.encode())),
        Case("200k id create", create(b'{"id": "%s"}' % LONG_200K.encode())),
        Case("10k id show", get(f"/v2/images/{LONG_10K}")),
        Case("200k id show", get(f"/v2/images/{LONG_200K}")),
        Case("10k id delete", request("DELETE", f"/v2/images/{LONG_10K}")),
        Case("10k id upload", request("PUT", f"/v2/images/{LONG_10K}/file", b"abc")),
        Case("10k id download", get(f"/v2/images/{LONG_10K}/file")),
        Case("10k id update", request("PATCH", f"/v2/images/{LONG_10K}", b"[]", PATCH)),
        Case("100 KB header", get(f"/v2/images/{ACTIVE}", (b"X-Big", b"h" * 100_000))),
        Case("300 headers", get("/v2/images", *[(b"X-H%d" % i, b"v") for i in range(300)])),
    ]


def _encoding() -> list[Case]:
    return [
        Case("percent non-UTF-8 path", get("/v2/images/%FF%FE")),
        Case("raw non-UTF-8 path", get(b"/v2/images/\xff\xfe")),
        Case("raw non-UTF-8 delete", request("DELETE", b"/v2/images/\xff")),
        Case("non-UTF-8 download", get(b"/v2/images/\xc3\x28/file")),
        Case("non-UTF-8 project", get(f"/v2/images/{ACTIVE}", (b"X-Project-Id", b"\xff\xfe"))),
        Case("non-UTF-8 tenant create", create(b'{"name": "t"}', (b"X-Tenant-Id", b"\xe9\xff"))),
        Case("UTF-8 header", get("/v2/images", (b"X-Auth-Token", "é€".encode()))),
        Case(
            "non-UTF-8 content type",
            request("PATCH", f"/v2/images/{ACTIVE}", b"[]", ((b"Content-Type", b"\xff"),)),
        ),
        Case("NUL in path", get("/v2/images/%00")),
        Case("odd query", get("/v2/images?%ff=%00&&&=&a=%zz")),
    ]


def _lengths() -> list[Case]:
    body = b'{"name": "short"}'
    head = b"POST /v2/images HTTP/1.1\r\n" + _HEAD + b"Content-Type: application/json\r\n"
    return [
        Case(
            "absurd Content-Length",
            head + b"Content-Length: 99999999999999999999\r\n\r\n" + body,
            True,
        ),
        Case("large Content-Length", head + b"Content-Length: 1000000\r\n\r\n" + body, True),
        Case("negative Content-Length", head + b"Content-Length: -1\r\n\r\n" + body),
        Case("text Content-Length", head + b"Content-Length: abc\r\n\r\n" + body),
        Case(
            "two Content-Lengths", head + b"Content-Length: 17\r\nContent-Length: 3\r\n\r\n" + body
        ),
        Case(
            "length and chunked",
            head
            + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n"
            + body
            + b"\r\n0\r\n\r\n",
        ),
        Case(
            "bad chunk size",
            head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body + b"\r\n0\r\n\r\n",
        ),
        Case(
            "chunked create",
            head + b"Transfer-Encoding: chunked\r\n\r\n11\r\n" + body + b"\r\n0\r\n\r\n",
        ),
        Case(
            "short upload",
            b"PUT /v2/images/%s/file HTTP/1.1\r\n" % QUEUED.encode()
            + _HEAD
            + b"Content-Length: 100\r\n\r\n0123456789",
            True,
        ),
    ]


def _ranges() -> list[Case]:
    file = f"/v2/images/{ACTIVE}/file"
    many = b"bytes=" + b",".join(b"%d-%d" % (i, i) for i in range(1000))
    return [
        Case("range", get(file, (b"Range", b"bytes=0-9"))),
        Case("multi-range", get(file, (b"Range", b"bytes=0-1,5-9"))),
        Case("1,000 ranges", get(file, (b"Range", many))),
        Case("overflowing start", get(file, (b"Range", b"bytes=99999999999999999999999-"))),
        Case("overflowing suffix", get(file, (b"Range", b"bytes=-99999999999999999999999"))),
        Case("unsatisfiable", get(file, (b"Range", b"bytes=5000-6000"))),
        Case("reversed", get(file, (b"Range", b"bytes=9-0"))),
        Case("not bytes", get(file, (b"Range", b"pages=1-2"))),
        Case("garbage range", get(file, (b"Range", b"bytes=abc"))),
    ]


def _methods() -> list[Case]:
    return [
        Case("HEAD image", request("HEAD", f"/v2/images/{ACTIVE}")),
        Case("HEAD file", request("HEAD", f"/v2/images/{ACTIVE}/file")),
        Case("OPTIONS", request("OPTIONS", "/v2/images")),
        Case("OPTIONS *", request("OPTIONS", "*")),
        Case("TRACE", request("TRACE", "/v2/images")),
        Case("unknown method", request("BREW", f"/v2/images/{ACTIVE}")),
        Case("lower-case method", request("get", f"/v2/images/{ACTIVE}")),
        Case("absolute URI", get(f"http://elsewhere.test/v2/images/{ACTIVE}")),
        Case("HTTP/1.0", request("GET", f"/v2/images/{ACTIVE}", version=b"HTTP/1.0")),
        Case("HTTP/9.9", request("GET", "/v2/images", version=b"HTTP/9.9")),
        Case("garbage line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
    ]


def _traversal() -> list[Case]:
    return [
        Case("dot-dot", get("/v2/images/../../etc/passwd")),
        Case("encoded dot-dot", get("/v2/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file")),
        Case("encoded upload", request("PUT", "/v2/images/..%2F..%2Ftmp%2Fx/file", b"abc")),
        Case("dot-dot inside", get(f"/v2/images/{ACTIVE}/../{ACTIVE}/file")),
        Case("double slashes", get(f"//v2//images//{ACTIVE}")),
        Case("NUL in id", get(f"/v2/images/{ACTIVE}%00/file")),
        Case("backslashes", get("/v2/images/..\\..\\windows")),
    ]


def _changes() -> list[Case]:
    image = f"/v2/images/{ACTIVE}"
    secret = b'[{"op": "add", "path": "/store_url", "value": "swift://admin:SECRET@swift.test/v1"}]'
    return [
        Case("patch with a secret", request("PATCH", image, secret, PATCH)),
        Case("patch not a list", request("PATCH", image, b'{"op": "add"}', PATCH)),
        Case("patch bad op", request("PATCH", image, b'[{"op": "move", "path": "/x"}]', PATCH)),
        Case("patch bad JSON", request("PATCH", image, b"[{", PATCH)),
        Case("deactivate", request("POST", f"{image}/actions/deactivate")),
        Case("download deactivated", get(f"{image}/file")),
        Case("reactivate", request("POST", f"{image}/actions/reactivate")),
        Case("upload twice", request("PUT", f"{image}/file", b"again")),
        Case("delete", request("DELETE", image)),
        Case("delete again", request("DELETE", image)),
    ]


CASES: tuple[Case, ...] = tuple(
    case
    for group in (
        _setup,
        _bad_json,
        _large,
        _encoding,
        _lengths,
        _ranges,
        _methods,
        _traversal,
        _changes,
    )
    for case in group()
)


def exchange(port: int, case: Case, timeout: float = 20.0) -> bytes:
    """Send *case* to 127.0.0.1:*port*; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        try:
            client.sendall(case.raw)
            if case.half_close:
                client.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before reading everything
            pass
        received = bytearray()
        while True:
            try:
                chunk = client.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return bytes(received)
