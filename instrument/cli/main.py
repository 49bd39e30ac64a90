"""The ``instrument`` command: ``demo``, ``listen`` and ``check``.

instrument demo                      # a whole image lifecycle, notifications printed
instrument listen --url amqp://…     # print the notifications a broker carries
instrument check --paste-ini glance-api-paste.ini
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..exceptions import ConfigError
from ..payloads import mask_credentials
from ..strategies._urls import check_url, split_transport_url
from .display import Printer

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``instrument`` console script."""
    began = time.monotonic()
    args = _parser().parse_args(argv)
    # Called in-process (argv given), the process's age is not the command's.
    args.began = None if argv is None else began
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instrument", description="Image lifecycle notifications."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run an image lifecycle through the kit and show the notifications"
    )
    demo.add_argument("--strategy", default="logging", choices=["logging", "rabbit", "qpid"])
    demo.add_argument("--url", help="broker URL for --strategy rabbit|qpid")
    demo.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    demo.add_argument(
        "--size",
        type=_demo_size,
        default=48,
        metavar="MIB",
        help=f"image size in MiB, at least {_SMALLEST_DEMO} (default 48)",
    )
    demo.set_defaults(run=_demo)

    listen = commands.add_parser("listen", help="print the notifications a broker carries")
    listen.add_argument(
        "--url", required=True, help="kombu URL (amqp://, filesystem://, …) or AMQP 1.0 URL"
    )
    listen.add_argument(
        "--amqp1", action="store_true", help="consume over AMQP 1.0 (python-qpid-proton)"
    )
    listen.add_argument("--exchange", default="glance")
    listen.add_argument("--topic", default="notifications")
    listen.add_argument(
        "--durable", action="store_true", help="the exchange is durable (rabbit_durable_queues)"
    )
    listen.add_argument("--event", help="show only this event type, e.g. image.send")
    listen.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    listen.add_argument("--count", type=int, help="exit after this many notifications")
    listen.add_argument("--timeout", type=float, help="exit after this many seconds")
    listen.add_argument(
        "--folder", help="filesystem:// transport: the data folder (data_folder_in/out)"
    )
    listen.set_defaults(run=_listen)

    check = commands.add_parser(
        "check", help="send one test notification through the configured strategy"
    )
    check.add_argument("--paste-ini", help="read the options of a paste filter section")
    check.add_argument(
        "--filter", default=None, help="the filter's name in the paste.ini (default: ours)"
    )
    check.add_argument("-o", "--option", action="append", default=[], metavar="NAME=VALUE")
    check.add_argument(
        "--timeout", type=float, default=10.0, help="seconds the whole check may take"
    )
    check.set_defaults(run=_check)
    return parser


#: The demo's aborted download reads 1 MiB and resets: a smaller image would be in the
#: client's and the server's socket buffers by then, whole, and not aborted at all.
_SMALLEST_DEMO = 8


def _demo_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < _SMALLEST_DEMO:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of MiB, at least {_SMALLEST_DEMO} (the aborted download "
            f"must be cut short), not {text!r}"
        )
    return size


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(strategy=args.strategy, url=args.url, as_json=args.json, size_mib=args.size)


def _listen(args: argparse.Namespace) -> int:
    from .listen import listen_amqp1, listen_kombu

    printer = Printer(as_json=args.json, event=args.event)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.timeout:
        timer = threading.Timer(args.timeout, stop.set)
        timer.daemon = True  # must not keep the process alive once --count is reached
        timer.start()

    def show(notification: dict[str, Any]) -> None:
        printer.show(notification)
        if args.count and printer.count >= args.count:
            stop.set()

    printer.header()
    ready = threading.Event()
    threading.Thread(target=_announce, args=(ready, stop, args), daemon=True).start()
    options: dict[str, Any] = {
        "exchange": args.exchange,
        "topic": args.topic,
        "stop": stop,
        "ready": ready,
        "connect_timeout": min(args.timeout or 10.0, 10.0),
    }
    try:
        # As the strategies do: a bad URL is one masked line, before any client library
        # quotes a piece of it (an unencoded "/" in a password reads as a port). Each
        # ";"-separated URL is checked; kombu takes a URL without a host (or without a
        # scheme) as localhost, and proton takes one without a scheme.
        for piece in split_transport_url(args.url, hostless=True):
            if "://" in piece:
                check_url("--url", piece, host_needed=args.amqp1, whole=args.url)
    except ConfigError as exc:
        print(f"instrument listen: {exc}", file=sys.stderr)
        return 2
    try:
        if args.amqp1:
            listen_amqp1(args.url, show, **options)
        else:
            folder = (
                {"data_folder_in": args.folder, "data_folder_out": args.folder}
                if args.folder
                else None
            )
            listen_kombu(args.url, show, durable=args.durable, transport_options=folder, **options)
    except Exception as exc:
        print(f"instrument listen: {mask_credentials(str(exc))}", file=sys.stderr)
        return 2
    finally:
        stop.set()
    return 0


def _announce(ready: threading.Event, stop: threading.Event, args: argparse.Namespace) -> None:
    while not (ready.wait(0.2) or stop.is_set()):
        pass
    if ready.is_set():
        where = f"exchange {args.exchange!r}, keys {args.topic}.*"
        print(f"# listening on {mask_credentials(args.url)} ({where})", file=sys.stderr, flush=True)


def _check(args: argparse.Namespace) -> int:
    from .check import run_check

    spent = None if args.began is None else time.monotonic() - args.began
    return run_check(args.paste_ini, args.filter, args.option, args.timeout, spent=spent)
