"""``instrument check``: prove the configured strategy can deliver, or say precisely why not.

Options come from a paste.ini filter section (the one that uses our filter, or the one
named with ``--filter``) and/or ``-o name=value``. The strategies' start-up checks run
first (connection refused, authentication failed, TLS failure, unknown vhost …), then
one test notification (event type ``instrument.check``) is sent and flushed.

Exit codes: 0 delivered, 1 the strategy cannot deliver, 2 the configuration is wrong.
A configuration error is one line on stderr, never a traceback: every ``ValueError``
raised while the options are read and the strategies built (a
:class:`~instrument.exceptions.ConfigError` is one) counts as one.
"""

from __future__ import annotations

import configparser
import os
import sys
import time
from collections.abc import Sequence

from .._filter_options import filter_options as middleware_options
from ..config import Settings
from ..exceptions import ConfigError, StrategyError
from ..middleware import MIDDLEWARE_OPTIONS
from ..notifier import Notifier
from ..oslo import from_service_config

__all__ = ["CHECK_EVENT", "filter_options", "run_check"]

CHECK_EVENT = "instrument.check"
_OUR_FACTORIES = ("egg:instrument#notifications", "instrument.middleware:filter_factory")
_PASTE_KEYS = ("use", "paste.filter_factory")


def filter_options(path: str, name: str | None = None) -> dict[str, str]:
    """The options of our filter's section in the paste.ini at *path*, as Paste reads them.

    PasteDeploy itself parses the section, so ``%(here)s`` and ``[DEFAULT]`` values
    are interpolated exactly as in production.
    """
    from paste.deploy import loadwsgi

    parser = configparser.ConfigParser(default_section="\0none", interpolation=None)
    try:
        read = parser.read(path)
    except configparser.Error as exc:  # its text quotes the line, which may hold a secret
        raise ConfigError("paste-ini", path, f"a valid ini file ({_where(exc)})") from None
    if not read:
        raise ConfigError("paste-ini", path, "a readable paste.ini file")
    sections = [s for s in parser.sections() if s.startswith("filter:")]
    if name is not None:
        chosen = [s for s in sections if s == f"filter:{name}"]
    else:
        chosen = [
            s for s in sections if any(parser[s].get(k, "") in _OUR_FACTORIES for k in _PASTE_KEYS)
        ]
    if len(chosen) != 1:
        found = ", ".join(sections) or "no filter sections"
        raise ConfigError(
            "filter", name, f"one filter section that uses instrument (found: {found})"
        )
    uri = f"config:{os.path.abspath(path)}"
    try:
        context = loadwsgi.loadcontext(loadwsgi.FILTER, uri, name=chosen[0].removeprefix("filter:"))
    except configparser.Error as exc:  # its text may quote a value: a password
        raise ConfigError("paste-ini", path, f"a section Paste can load ({_where(exc)})") from None
    except (LookupError, ImportError) as exc:  # what Paste itself raises
        raise ConfigError("paste-ini", path, f"a section Paste can load ({exc})") from None
    return {k: v for k, v in context.local_conf.items() if k not in _PASTE_KEYS}


def _where(exc: configparser.Error) -> str:
    """What is wrong in an ini file and where, without the text of the line."""
    at = [
        f"{label} {value!r}"
        for label, value in (
            ("line", getattr(exc, "lineno", None)),
            ("section", getattr(exc, "section", None)),
            ("option", getattr(exc, "option", None)),
        )
        if value is not None
    ]
    return ", ".join([type(exc).__name__, *at])


def run_check(
    paste_ini: str | None,
    filter_name: str | None,
    options: Sequence[str],
    timeout: float,
    *,
    spent: float | None = None,
) -> int:
    """Check; *spent* is the time the command has already taken (None: this process's
    age, for the console script, whose start-up counts)."""
    try:
        mapping = filter_options(paste_ini, filter_name) if paste_ini else {}
        mapping.update(_pairs(options))
        settings = Settings.load(from_service_config(mapping))
        middleware_options(settings)  # the filter's own options fail here as at start-up
        notifier = Notifier.from_settings(settings, also_known=MIDDLEWARE_OPTIONS)
    except ValueError as exc:  # ConfigError, or a library's complaint about a value
        print(f"configuration error: {_one_line(exc)}", file=sys.stderr)
        return 2
    names = ", ".join(strategy.name for strategy in notifier.strategies)
    # --timeout bounds the whole command: what start-up took (the interpreter, the
    # imports of a broker client on a busy machine) is taken off the check's share.
    spent = _seconds_since_start() if spent is None else spent
    timeout = max(timeout - spent, _SMALLEST_CHECK)
    try:
        notifier.check(timeout)
        return _send_probe(notifier, names, timeout)
    except StrategyError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        notifier.close()


#: The least time a check is given, however long start-up took.
_SMALLEST_CHECK = 0.5


def _seconds_since_start() -> float:
    """How long ago this process started (Linux), else 0."""
    try:
        with open("/proc/self/stat") as stat:
            started = int(stat.read().rsplit(")", 1)[1].split()[19])
        return max(
            time.clock_gettime(time.CLOCK_BOOTTIME) - started / os.sysconf("SC_CLK_TCK"), 0.0
        )
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def _send_probe(notifier: Notifier, names: str, timeout: float) -> int:
    sent = notifier.info(CHECK_EVENT, {"message": "instrument check: test notification"})
    if sent is None:
        print(
            f"FAILED: event type {CHECK_EVENT} is disabled by disabled_notifications",
            file=sys.stderr,
        )
        return 1
    delivered = notifier.flush(timeout)
    stats = {name: row for name, row in notifier.stats().items() if name != "notifier"}
    failed = [name for name, row in stats.items() if row.get("failed") or row.get("dropped")]
    if not delivered or failed:
        culprits = ", ".join(failed) or names
        print(
            f"FAILED: test notification {sent.message_id} not delivered by {culprits}"
            f" within {timeout:g}s: {stats}",
            file=sys.stderr,
        )
        return 1
    print(f"OK: test notification {sent.message_id} delivered through {names}")
    return 0


def _one_line(exc: Exception) -> str:
    """*exc* as one line (a ConfigError is one already; anything else is named)."""
    text = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _pairs(options: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep:
            raise ConfigError("option", option, "NAME=VALUE")
        pairs[name.strip()] = value.strip()
    return pairs
