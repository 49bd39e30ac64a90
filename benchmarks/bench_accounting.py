"""What image.send's ``bytes_sent`` says against what the client read, on every server.

Run: ``python benchmarks/bench_accounting.py [--gib N] [--rounds N] [--readme]``. Each
server of the test matrix that runs here (``tests/test_sending_matrix.py``: waitress,
gunicorn sync/gthread/gevent, uWSGI, mod_wsgi) serves the matrix's application
(``tests/test_sending_servers.py:server_app``) on 127.0.0.1, and for each body kind
(generator, ``wsgi.file_wrapper``):

1. **The aborted download.** A slow client (SO_RCVBUF 64 KiB, reads of 64 KiB with
   10 ms between them) asks for a 64 MiB image, reads 1 MiB of body and closes. The
   overcount is ``bytes_sent - client read``. Goal: at most 256 KiB where the kit
   reads ``TCP_INFO``, at most the kernel's send buffer elsewhere, and never INFO.
2. **The full download.** *--gib* GiB, counted and bare (the same body, not counted:
   ``&bare=1``), back to back, *--rounds* pairs (25 by default; who goes first
   alternates), by the client's wall clock until the body is in; each pair's ratio is
   bare time / counted time (1.0: no cost; goal ≥ 0.98). Reported: the median pair
   ratio with its 95 % confidence interval (order statistics, no assumption about the
   noise), and the verdict: "met" (the whole interval ≥ 0.98), "MISSED" (the whole
   interval below) or "not resolved" (this machine cannot tell). One pair's ratio
   moves by ±10 % and more here from one pair to the next, so a median of a few pairs
   says little. One more counted and one more bare download wait for the server's
   close: the "close after the body" column. ``--pin`` runs the server on CPU 0 and
   the client on the others, as ``bench_load.py`` does. The client acknowledges every
   read at once (``TCP_QUICKACK``), which steadies generator bodies. "zero-copy" says
   whether the counted file body kept the server's own path: an instance of its file
   wrapper class (gunicorn's sendfile, waitress's file buffer), or a file Python never
   read (uWSGI sends the kit's file response itself). mod_wsgi's is given up on
   purpose (``instrument/_servers.py`` says why).

``--readme`` writes the rows measured into README.md's table, between the
``bench_accounting`` markers; the rows of servers not measured in this run stay as
they were. Figures, not assertions: nothing here fails on a number.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import read_slowly_then_close  # noqa: E402
from tests.test_sending_matrix import HANDED_TO_SERVER, SERVERS, _unavailable  # noqa: E402
from tests.test_sending_servers import Server  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _processes import SERVER_CPUS, pin_self_away, pin_tree, tree_cpu  # noqa: E402
from _stats import median_interval  # noqa: E402

MiB = 1024 * 1024
GIB = 1024 * MiB
ABORTED = "image-64MiB.bin"
FULL = "image-full.bin"
BODIES = {"generator": "/gen", "file_wrapper": "/file"}
#: The kernel's largest send buffer here (net.ipv4.tcp_wmem): the goal where the kit
#: cannot read TCP_INFO.
SEND_BUFFER = 4 * MiB
#: The full download's goal: counted at least this fraction of bare's speed.
SPEED_GOAL = 0.98
START, END = "<!-- bench_accounting -->", "<!-- /bench_accounting -->"
_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)  # Linux


def write_image(path: Path, size: int) -> None:
    block = bytes(range(256)) * 4096
    with open(path, "wb") as file:
        for _ in range(size // len(block)):
            file.write(block)


def aborted(server: Server, body: str) -> dict[str, Any]:
    image_id = str(uuid.uuid4())
    read = read_slowly_then_close(server.port, f"{body}?id={image_id}&image={ABORTED}", MiB)
    sent = server.send_event(image_id)
    bytes_sent = sent["payload"]["bytes_sent"]
    return {
        "read": read,
        "sent": bytes_sent,
        "over": bytes_sent - read,
        "priority": sent["priority"],
    }


def download(port: int, target: str, *, until_close: bool = False) -> tuple[int, float, float]:
    """GET *target*: (bytes, seconds until the body was in, seconds more until EOF).

    The body's end is what an HTTP client waits for (Content-Length); the client then
    closes. With *until_close* it waits for the server's close instead, which comes
    later where something still holds the connection (EOF lag 0.0 without).
    """
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as client:
        client.sendall(
            f"GET {target} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
        )
        view, received, expected = memoryview(bytearray(MiB)), 0, None
        while count := client.recv_into(view):
            # Acknowledge at once (Linux clears the flag again): with delayed
            # acknowledgements a generator body's gigabyte took 0.33 to 0.96 s from one
            # download to the next, bare or counted, and pairs of them said nothing.
            client.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            received += count
            if expected is None:
                expected = _response_length(bytes(view[:count]))
            if received == expected:
                body_in = time.perf_counter()
                while until_close and client.recv_into(view):
                    pass
                lag = time.perf_counter() - body_in if until_close else 0.0
                return received, body_in - began, lag
    return received, time.perf_counter() - began, 0.0


def _response_length(first: bytes) -> int | None:
    """Head plus Content-Length, from the first bytes of a response."""
    head, _, _ = first.partition(b"\r\n\r\n")
    for header in head.split(b"\r\n")[1:]:
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return None


@dataclasses.dataclass
class Download:
    """One full download: seconds until the body was in, the server's CPU seconds, the
    EOF lag, and for a counted one its image.send's priority and whether zero-copy was
    kept."""

    wall: float
    cpu: float
    lag: float
    priority: str | None = None
    kept: bool | None = None


def timed_download(
    server: Server, body: str, size: int, mode: str, *, until_close: bool = False
) -> Download:
    """A full download, counted or bare. A counted one's CPU is read once its image.send
    is out, so the kit's report at the response's end is in it."""
    assert server.process is not None
    image_id = str(uuid.uuid4())
    target = f"{body}?id={image_id}&image={FULL}" + ("&bare=1" if mode == "bare" else "")
    used = tree_cpu(server.process.pid)
    received, wall, lag = download(server.port, target, until_close=until_close)
    if received < size:
        raise RuntimeError(f"{server.kind} {body}: {received} bytes of {size}")
    if mode == "bare":
        return Download(wall, tree_cpu(server.process.pid) - used, lag)
    priority = server.send_event(image_id)["priority"]
    cpu = tree_cpu(server.process.pid) - used
    return Download(wall, cpu, lag, priority, kept_zero_copy(server, image_id))


def full(server: Server, body: str, size: int, rounds: int) -> dict[str, Any]:
    """Counted and bare downloads, back to back, *rounds* times (who goes first
    alternates). Each pair's ratio is taken, and their median reported with its 95 %
    confidence interval: a pair shares the machine's state of the moment, which drifts
    by more than the counter costs between pairs. Then one counted and one bare
    download wait for the server's close, for the EOF lag."""
    pairs = []
    for round_ in range(rounds):
        order = sorted(("bare", "counted"), reverse=round_ % 2 == 1)
        pairs.append({mode: timed_download(server, body, size, mode) for mode in order})
    wall = [pair["bare"].wall / pair["counted"].wall for pair in pairs]
    cpu = [pair["bare"].cpu / pair["counted"].cpu for pair in pairs]
    counted = [pair["counted"] for pair in pairs]
    kept = [download.kept for download in counted]
    eof_lag = {
        mode: timed_download(server, body, size, mode, until_close=True).lag
        for mode in ("counted", "bare")
    }
    return {
        "ratio": statistics.median(wall),
        "interval": median_interval(wall),
        "cpu_ratio": statistics.median(cpu),
        "pairs": rounds,
        "gbps": size / min(download.wall for download in counted) / 1e9,
        "zero_copy": (None if None in kept else all(kept)) if body == "/file" else None,
        "full_priority": "/".join(sorted({str(download.priority) for download in counted})),
        "eof_lag": eof_lag,
    }


def kept_zero_copy(server: Server, image_id: str) -> bool | None:
    """Whether the counted body took the server's own file path (None: it has none).

    An instance of the server's file wrapper class, or a file body Python never read.
    """
    kept = server.mark(image_id)["is_server_wrapper"]
    if kept is None:
        return None
    return bool(kept) or server.read_by_python(image_id) == 0


def measure(kind: str, root: Path, size: int, rounds: int, pin: bool) -> list[dict[str, Any]]:
    workdir = root / kind
    workdir.mkdir()
    workdir.chmod(0o777)
    server = Server(kind, workdir, root / ABORTED)
    server.env.pop("TEST_SENDFILE_LOG")  # the tests' sendfile log costs a write per call
    server.start()
    if pin and server.process is not None:
        pin_tree(server.process.pid, SERVER_CPUS)
    try:
        download(server.port, f"/gen?id=warm-up&image={ABORTED}&bare=1")
        rows = []
        for name, body in BODIES.items():
            row = {"server": kind, "body": name, **aborted(server, body)}
            row.update(full(server, body, size, rounds))
            print(line(row), flush=True)
            rows.append(row)
        return rows
    finally:
        server.stop()


def line(row: dict[str, Any]) -> str:
    zero_copy = {None: "n/a", True: "kept", False: "lost"}[row["zero_copy"]]
    if row["body"] == "file_wrapper" and row["zero_copy"] is None:
        zero_copy = "none (no wsgi.file_wrapper)"
    lag = row["eof_lag"]
    low, high, coverage = row["interval"]
    return (
        f"| {row['server']} | {row['body']} | {row['read']:,} | {row['sent']:,} "
        f"| {row['over']:+,} B ({goal(row)}) | {row['priority']} "
        f"| {row['ratio']:.3f} ({speed_goal(row)}; {coverage:.0%} CI {low:.3f} to {high:.3f}, "
        f"{row['pairs']} pairs; {row['gbps']:.2f} GB/s, {row['full_priority']}) "
        f"| {row['cpu_ratio']:.3f} "
        f"| {lag['counted'] * 1e3:.1f} / {lag['bare'] * 1e3:.1f} ms | {zero_copy} |"
    )


def goal(row: dict[str, Any]) -> str:
    """The overcount's goal for the row's server, and whether it is met."""
    limit = SEND_BUFFER if row["server"] in HANDED_TO_SERVER else 256 * 1024
    met = row["over"] <= limit and row["priority"] != "INFO"
    return f"{'met' if met else 'MISSED'}: ≤ {limit // 1024:,} KiB"


def speed_goal(row: dict[str, Any]) -> str:
    """The full download's goal (counted/bare ≥ 0.98), judged by the median's interval:
    met (all of it at or above), MISSED (all of it below), else not resolved."""
    low, high, _ = row["interval"]
    if low >= SPEED_GOAL:
        return "met"
    return "MISSED" if high < SPEED_GOAL else "not resolved"


HEADER = (
    "| server | body | aborted: client read | `bytes_sent` | overcount | priority "
    "| full download, counted/bare | server CPU, counted/bare "
    "| close after the body, counted / bare | zero-copy |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def write_readme(lines: list[str]) -> None:
    """README's table: these rows, and the rows it had of the servers not measured now."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    before, _, rest = text.partition(START)
    table, _, after = rest.partition(END)
    if not rest:
        raise SystemExit(f"README.md has no {START} marker")
    rows = {place(row): row for row in [*table.splitlines(), *lines] if place(row)}
    body = "\n".join(rows[key] for key in sorted(rows))
    readme.write_text(f"{before}{START}\n{HEADER}\n{body}\n{END}{after}")


def place(row: str) -> tuple[int, int] | None:
    """Where a table row goes: its server's and its body's place; None: not a row."""
    cells = [cell.strip() for cell in row.split("|")[1:3]]
    if len(cells) < 2 or cells[0] not in SERVERS or cells[1] not in BODIES:
        return None
    return SERVERS.index(cells[0]), list(BODIES).index(cells[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="GiB per full download")
    parser.add_argument("--rounds", type=int, default=25, help="counted/bare pairs, median taken")
    parser.add_argument(
        "--pin", action="store_true", help="the server on CPU 0, this client on the others"
    )
    parser.add_argument("--servers", nargs="*", default=SERVERS, help="which servers")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    size = int(args.gib * GIB) // MiB * MiB
    if args.pin:
        pin_self_away()
    rows = []
    with tempfile.TemporaryDirectory(prefix="instrument-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o777)  # Apache's workers read the images too
        write_image(root / ABORTED, 64 * MiB)
        write_image(root / FULL, size)
        pinned = ", server pinned to CPU 0" if args.pin else ""
        print(
            f"full downloads: {size / GIB:g} GiB, {args.rounds} pairs{pinned}\n{HEADER}",
            flush=True,
        )
        for kind in args.servers:
            reason = _unavailable(kind)
            if reason is not None:
                print(f"| {kind} | not run here: {reason} |||||||||")
                continue
            rows.extend(measure(kind, root, size, args.rounds, args.pin))
    if args.readme:
        write_readme([line(row) for row in rows])


if __name__ == "__main__":
    main()
