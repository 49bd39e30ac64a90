"""Ratio benchmark of the image.send byte counter (instrument/sending.py).

Run: ``python benchmarks/bench_iterators.py [--gib N] [--rounds N]``. Every ratio is
measured side by side in one run (runs interleaved, best of N each):

1. In process, 1 GiB worth of a preallocated chunk list at 64 KiB and 4 KiB chunks,
   bare list vs ``count_sent(list)``, with three consumers: an empty loop (pure iterator
   overhead, the worst case), ``os.write`` of every chunk to /dev/null (one system call,
   no copy), and ``sendall`` of every chunk to a socketpair drained by a thread (what a
   synchronous server does per chunk).
2. Over loopback, a 1 GiB download from waitress (separate process): bare app vs
   counted app, for a generator body and for a ``wsgi.file_wrapper`` body: throughput
   ratio and the growth of the server process's VmRSS during the downloads.

Ratios are bare time / counted time (1.0 = no cost), by wall clock and by CPU time
(the consuming thread's in process, the server process's over loopback). On a shared
or small VM these measured figures move by several percent between runs, more than
the counter costs, so each line also prints a *modelled* ratio: the bare time per
chunk against the same plus the counter's own CPU per chunk, which the empty loop and
os.write to /dev/null measure steadily (no data is copied there).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from _processes import process_cpu

from instrument import Notifier, count_sent
from instrument.strategies.memory import MemoryStrategy

GIB = 1024**3
SERVED_CHUNK = 64 * 1024

# 1. in process -------------------------------------------------------------------


def consume_empty(iterable: Iterable[bytes]) -> None:
    for _chunk in iterable:
        pass


def consume_devnull(iterable: Iterable[bytes], fd: int) -> None:
    write = os.write
    for chunk in iterable:
        write(fd, chunk)


def consume_socket(iterable: Iterable[bytes], sock: socket.socket) -> None:
    sendall = sock.sendall
    for chunk in iterable:
        sendall(chunk)


class Drained:
    """A socketpair whose far end a thread reads and discards (a loopback client)."""

    def __init__(self) -> None:
        self.near, self.far = socket.socketpair()
        for end, option in ((self.near, socket.SO_SNDBUF), (self.far, socket.SO_RCVBUF)):
            end.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        view = memoryview(bytearray(1024 * 1024))
        while self.far.recv_into(view):
            pass

    def close(self) -> None:
        self.near.close()
        self.thread.join()
        self.far.close()


class Best:
    """Best (smallest) wall-clock and CPU seconds seen for one variant."""

    def __init__(self) -> None:
        self.wall = self.cpu = float("inf")

    def add(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = min(self.wall, wall), min(self.cpu, cpu)


def ratios(label: str, total: int, bare: Best, counted: Best, chunks: int | None = None) -> str:
    """Throughput ratio (bare time / counted time) by wall clock and by CPU time."""
    extra = ""
    if chunks:
        extra = f"  (+{(counted.cpu - bare.cpu) / chunks * 1e9:.0f} ns CPU/chunk)"
    return (
        f"  {label:<30} bare {total / bare.wall / GIB:7.2f} GiB/s"
        f"  counted {total / counted.wall / GIB:7.2f} GiB/s"
        f"  ratio wall {bare.wall / counted.wall:.3f}  cpu {bare.cpu / counted.cpu:.3f}{extra}"
    )


def modelled(bare: Best, chunks: int, own_cost: float) -> str:
    """The ratio the counter's own cost per chunk allows: steadier than a measured one.

    A measured ratio of two I/O-bound runs moves by several percent from run to run,
    more than the counter costs. The counter's own CPU per chunk, measured where no
    data is copied (the empty loop, os.write to /dev/null), is steady; the bare time
    per chunk only enters the denominator, where its noise hardly moves the result.
    """
    per_chunk = bare.wall / chunks
    return f"modelled {per_chunk / (per_chunk + own_cost):.4f}"


Consume = Callable[[Iterable[bytes]], None]


def thread_timed(run: Callable[[], None], best: Best) -> None:
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    best.add(time.perf_counter() - wall, time.thread_time() - cpu)


def in_process(chunk_size: int, total: int, rounds: int, consume: Consume) -> tuple[Best, Best]:
    """Best bare and best counted times for one chunk size and consumer."""
    chunks = [b"\0" * chunk_size] * (total // chunk_size)
    notifier = Notifier(MemoryStrategy(memory_max=1))

    def bare() -> None:
        consume(chunks)

    def counted() -> None:
        result = count_sent(chunks, notifier, image_id="bench", expected=total)
        consume(result)
        result.close()  # type: ignore[attr-defined]

    best_bare, best_counted = Best(), Best()
    for _ in range(rounds):
        thread_timed(bare, best_bare)
        thread_timed(counted, best_counted)
    return best_bare, best_counted


def report_in_process(total: int, rounds: int) -> float:
    """Print the in-process ratios; return the counter's own CPU per served chunk."""
    print(f"in process: {total / GIB:g} GiB of preallocated chunks, best of {rounds}")
    fd = os.open(os.devnull, os.O_WRONLY)
    drained = Drained()
    consume_socket_bound: Consume = lambda chunks: consume_socket(chunks, drained.near)  # noqa: E731
    consumers: list[tuple[str, Consume]] = [
        ("empty loop", consume_empty),
        ("os.write /dev/null", lambda chunks: consume_devnull(chunks, fd)),
        ("sendall socketpair", consume_socket_bound),
    ]
    # The counter's own CPU seconds per chunk, by size: the larger of what the empty
    # loop and os.write to /dev/null measure (neither copies data, so both are steady).
    own_cost: dict[int, float] = {}
    try:
        for label, consume in consumers:
            for size in (64 * 1024, 4 * 1024):
                chunks = total // size
                bare, counted = in_process(size, total, rounds, consume)
                if consume is not consume_socket_bound:  # no copy: a steady CPU figure
                    extra = (counted.cpu - bare.cpu) / chunks
                    own_cost[size] = max(own_cost.get(size, 0.0), extra)
                line = ratios(f"{label}, {size // 1024} KiB", total, bare, counted, chunks)
                print(f"{line}  {modelled(bare, chunks, own_cost[size])}")
    finally:
        drained.close()
        os.close(fd)
    return own_cost[SERVED_CHUNK]


# 2. through waitress ---------------------------------------------------------------


def make_app(total: int, image: str) -> Callable[..., Iterable[bytes]]:
    chunk = b"\0" * SERVED_CHUNK
    notifier = Notifier(MemoryStrategy(memory_max=16))

    def generate() -> Iterator[bytes]:
        for _ in range(total // SERVED_CHUNK):
            yield chunk

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", str(total))])
        kind, _, mode = environ["PATH_INFO"].strip("/").partition("/")
        if kind == "file":
            body = environ["wsgi.file_wrapper"](open(image, "rb"), SERVED_CHUNK)  # noqa: SIM115
        else:
            body = generate()
        if mode == "counted":
            return count_sent(body, notifier, image_id="bench", expected=total, environ=environ)
        return body  # type: ignore[no-any-return]

    return app


def serve(port_file: str, total: int, image: str) -> None:
    import waitress

    server = waitress.create_server(make_app(total, image), host="127.0.0.1", port=0)
    Path(port_file + ".tmp").write_text(str(server.effective_port))
    os.rename(port_file + ".tmp", port_file)
    server.run()


def download(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        buffer = bytearray(1024 * 1024)
        view, received = memoryview(buffer), 0
        while count := client.recv_into(view):
            received += count
        return received


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(workdir: Path, total: int, image: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = workdir / "port"
    command = [
        sys.executable,
        __file__,
        "--serve",
        str(port_file),
        "--bytes",
        str(total),
        "--image",
        str(image),
    ]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("waitress did not start")
        time.sleep(0.05)
    return process, int(port_file.read_text())


def through_waitress(
    kind: str, total: int, rounds: int, workdir: Path, image: Path, own_cost: float
) -> None:
    process, port = start_server(workdir / kind, total, image)
    try:
        download(port, f"/{kind}/bare")  # warm up: imports, page cache, first buffers
        download(port, f"/{kind}/counted")
        best = {"bare": Best(), "counted": Best()}
        growth = {"bare": 0, "counted": 0}
        for _ in range(rounds):
            for mode in ("bare", "counted"):
                rss, cpu, wall = (
                    vm_rss_kib(process.pid),
                    process_cpu(process.pid),
                    time.perf_counter(),
                )
                check(download(port, f"/{kind}/{mode}"), total)
                wall, cpu = time.perf_counter() - wall, process_cpu(process.pid) - cpu
                best[mode].add(wall, cpu)
                growth[mode] += vm_rss_kib(process.pid) - rss
        line = ratios(f"{kind} body", total, best["bare"], best["counted"])
        print(f"{line}  {modelled(best['bare'], total // SERVED_CHUNK, own_cost)}")
        print(
            f"  {'':<30} server VmRSS growth over {rounds} downloads each:"
            f" bare {growth['bare']:+d} KiB, counted {growth['counted']:+d} KiB"
        )
    finally:
        process.terminate()
        process.wait(timeout=15)


def check(received: int, total: int) -> None:
    if received <= total:
        raise RuntimeError(f"short download: {received} bytes for a {total} byte body")


def report_waitress(total: int, rounds: int, own_cost: float) -> None:
    print(f"waitress over loopback: {total / GIB:g} GiB per download, best of {rounds}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        image = workdir / "image.bin"
        with open(image, "wb") as file:
            for _ in range(total // SERVED_CHUNK):
                file.write(b"\0" * SERVED_CHUNK)
        for kind in ("generator", "file"):
            (workdir / kind).mkdir()
            through_waitress(kind, total, rounds, workdir, image, own_cost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="GiB per measured run")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved runs, best taken")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.bytes, args.image)
        return
    total = int(args.gib * GIB) // SERVED_CHUNK * SERVED_CHUNK
    own_cost = report_in_process(total, args.rounds)
    report_waitress(total, args.rounds, own_cost)


if __name__ == "__main__":
    main()
