"""The configuration files of the test's Glance: glance-api.conf, its paste.ini, logging.

Glance is configured as an operator would: SQLite, two filesystem stores (``fs``, the
default, and ``fs2`` for copy-image), the three import methods with web-download allowed
to reach a server the test runs on 127.0.0.1, and Glance's own notifications through
oslo.messaging's ``log`` driver into a JSON-lines file of their own.

Two flavours of identity (``[paste_deploy] flavor``):

- ``""`` (Glance's ``default``): no auth, ``unauthenticated-context``. Glance itself
  cannot import there (its task needs an owner).
- ``"context"``: Glance's own ``context`` filter, fed identity headers by
  :mod:`tests.glance.identity` (what ``authtoken`` does with a token), so the kit and
  Glance read one identity: ``... identity context notifications rootapp``.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

#: Uploads above this fail inside Glance's store path (413 after image.prepare).
IMAGE_SIZE_CAP = 9 * 1024 * 1024
STORE_FOLDERS = ("images", "images2", "staging", "tasks", "image-cache")
_FRONT = "cors http_proxy_to_wsgi versionnegotiation osprofiler"


class ConfigUnavailable(RuntimeError):
    """Glance's shipped paste.ini does not have the shape the test edits."""


@dataclass(frozen=True)
class Setup:
    """How one test Glance is configured."""

    #: ``""`` (no auth), ``"context"`` (identity headers, see the module doc),
    #: ``"keystone"``, ``"keystone+caching"`` or ``"keystone+cachemanagement"`` (a real
    #: Keystone: :mod:`.keystone`; the caching ones want :attr:`image_cache`).
    flavor: str = ""
    #: The client's ``OS_AUTH_TOKEN`` (and raw requests' ``X-Auth-Token``).
    token: str = "parity-test-token"
    #: The filter section's options; None: the logging strategy into the kit's file.
    filter_options: tuple[str, ...] | None = None
    #: Ports web-download may fetch from (Glance allows 80 and 443 only by default).
    import_ports: tuple[int, ...] = ()
    #: Lines appended to glance-api.conf (sections of their own).
    extra_conf: str = ""
    #: ``[DEFAULT] transport_url``: Glance's own notifications go to its ``log`` driver
    #: whatever it is; a filter with ``oslo_config_project = glance`` publishes there.
    transport_url: str = "fake:/"
    #: False: Glance's own pipeline, without the filter (the bare side of a benchmark).
    filtered: bool = True
    #: Glance's image cache in ``<work>/image-cache`` (``image_cache_dir``; its default
    #: ``centralized_db`` driver keeps the records in Glance's database).
    image_cache: bool = False
    #: Source of a ``sitecustomize`` module Glance's processes run at start-up
    #: (``bench_glance.py`` times the filter from inside the worker with it).
    site_hook: str = ""


def paste_config(paste_ini: str, setup: Setup, kit_log: Path) -> str:
    """Glance's paste.ini with ``notifications`` right before ``rootapp`` in the flavour.

    In the keystone flavours it goes right after ``context`` (before Glance's ``cache``,
    which answers cached downloads itself: after it, the filter would not see them).
    """
    if not setup.filtered:
        return paste_ini
    if setup.flavor.startswith("keystone"):
        return _after_context(paste_ini, setup, kit_log)
    pattern = re.compile(r"^(default\s*=.*?)\s+rootapp\s*$", re.MULTILINE)
    if not pattern.search(paste_ini):
        raise ConfigUnavailable("no 'default = ... rootapp' line in glance-api-paste.ini")
    edited = pattern.sub(r"\1 notifications rootapp", paste_ini, count=1)
    sections = [edited.rstrip("\n"), filter_section(setup, kit_log)]
    if setup.flavor == "context":
        line = f"context = {_FRONT} identity context notifications rootapp"
        edited = edited.replace("[composite:api]\n", f"[composite:api]\n{line}\n", 1)
        sections = [
            edited.rstrip("\n"),
            filter_section(setup, kit_log),
            "[composite:glance-api-context]\npaste.composite_factory = "
            "glance.api:root_app_factory\n/: api\n/healthcheck: healthcheck\n",
            "[filter:identity]\npaste.filter_factory = tests.glance.identity:filter_factory\n",
        ]
    return "\n\n".join(sections)


def _after_context(paste_ini: str, setup: Setup, kit_log: Path) -> str:
    name = re.escape(setup.flavor)
    pattern = re.compile(rf"^({name}\s*=.*?\scontext)\s", re.MULTILINE)
    if not pattern.search(paste_ini):
        raise ConfigUnavailable(f"no '{setup.flavor} = ... context ...' line in the paste.ini")
    edited = pattern.sub(r"\1 notifications ", paste_ini, count=1)
    return "\n\n".join((edited.rstrip("\n"), filter_section(setup, kit_log)))


def filter_section(setup: Setup, log_file: Path) -> str:
    options = setup.filter_options
    if options is None:
        options = ("notifier_strategy = logging", f"log_file = {log_file}")
    return "\n".join(("[filter:notifications]", "use = egg:instrument#notifications", *options))


def glance_conf(work: Path, paste_ini: Path, logging_conf: Path, setup: Setup) -> str:
    ports = ",".join(str(port) for port in (80, 443, *setup.import_ports))
    cache = f"image_cache_dir = {work / 'image-cache'}" if setup.image_cache else ""
    return (
        textwrap.dedent(
            f"""\
            [DEFAULT]
            enabled_backends = fs:file, fs2:file, fs3:file
            enabled_import_methods = [glance-direct,web-download,copy-image]
            log_config_append = {logging_conf}
            transport_url = {setup.transport_url}
            worker_self_reference_url = http://127.0.0.1
            image_size_cap = {IMAGE_SIZE_CAP}
            {cache}

            [database]
            connection = sqlite:///{work / "glance.sqlite"}

            [glance_store]
            default_backend = fs

            [fs]
            filesystem_store_datadir = {work / "images"}

            [fs2]
            filesystem_store_datadir = {work / "images2"}

            [fs3]
            filesystem_store_datadir = {work / "images3"}

            [os_glance_staging_store]
            filesystem_store_datadir = {work / "staging"}

            [os_glance_tasks_store]
            filesystem_store_datadir = {work / "tasks"}

            [import_filtering_opts]
            allowed_hosts = [127.0.0.1]
            allowed_ports = [{ports}]

            [oslo_policy]
            enforce_new_defaults = false
            enforce_scope = false

            [paste_deploy]
            flavor = {setup.flavor}
            config_file = {paste_ini}

            [oslo_messaging_notifications]
            driver = log
            """
        )
        + setup.extra_conf
    )


def logging_conf(native_log: Path, glance_log: Path) -> str:
    """Glance's own notifications (one JSON envelope per line) to *native_log*."""
    return textwrap.dedent(
        f"""\
        [loggers]
        keys = root, notifications

        [handlers]
        keys = glance, notifications

        [formatters]
        keys = plain, message

        [logger_root]
        level = WARNING
        handlers = glance

        [logger_notifications]
        qualname = oslo.messaging.notification
        level = DEBUG
        handlers = notifications
        propagate = 0

        [handler_glance]
        class = FileHandler
        args = ({str(glance_log)!r}, "a")
        formatter = plain

        [handler_notifications]
        class = FileHandler
        args = ({str(native_log)!r}, "a")
        formatter = message

        [formatter_plain]
        format = %(asctime)s %(levelname)s %(name)s %(message)s

        [formatter_message]
        format = %(message)s
        """
    )
