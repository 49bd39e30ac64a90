"""The broker as the service configures it: options read from ``glance-api.conf`` with oslo.config.

keystonemiddleware's convention: ``oslo_config_project = glance`` (and optionally
``oslo_config_file``) in the filter's paste section makes the kit read the service's own
configuration file with a *local* ``oslo_config.cfg.ConfigOpts`` (never the process's
global ``CONF``), so a Glance operator adds the filter and nothing else.

Decisions:

* **What is read, and what it becomes** (:data:`MAPPED`):

  ====================================================  ==========================================
  oslo.config (group, option)                           the kit's option
  ====================================================  ==========================================
  ``[oslo_messaging_notifications] transport_url``,     ``transport_url``, and ``strategy``:
  else ``[DEFAULT] transport_url``                      ``rabbit`` for ``rabbit://``, ``qpid`` for
                                                        ``amqp://`` (oslo's AMQP 1.0 driver)
  ``[oslo_messaging_notifications] driver``             ``envelope``: ``messagingv2`` for
                                                        messagingv2, ``plain`` for messaging
  ``[oslo_messaging_notifications] topics`` (first)     ``rabbit_``/``qpid_notification_topic``
  ``[DEFAULT] control_exchange`` (if set)               ``rabbit_``/``qpid_notification_exchange``
  ``[oslo_messaging_rabbit] amqp_durable_queues``       ``rabbit_``/``qpid_durable_queues``
  ``[oslo_messaging_rabbit] ssl``, ``ssl_ca_file``,     ``rabbit_use_ssl``, ``rabbit_ssl_ca_file``,
  ``ssl_cert_file``, ``ssl_key_file``                   ``rabbit_ssl_cert_file``, ``..._key_file``
  ``[oslo_messaging_rabbit] rabbit_quorum_queue`` and,  ``rabbit_``/``qpid_quorum_queue`` and the
  with it, ``rabbit_quorum_delivery_limit``,            same limits (oslo ignores the limits
  ``_max_memory_length``, ``_max_memory_bytes``         without quorum queues, and so does this)
  ``[DEFAULT] default_publisher_id`` (if set)           ``publisher_id``
  ``[DEFAULT] disabled_notifications`` (if set)         ``disabled_notifications``
  ====================================================  ==========================================

  With ``driver = messaging`` or ``messagingv2`` and no ``transport_url`` at all, the
  service publishes to oslo.messaging's default, ``rabbit://`` (guest on localhost), and
  so does the kit. With neither, the file names no broker: the kit says so in a warning
  and takes none from it.

  The driver never selects or switches off the kit's strategy: the README tells
  operators to set Glance's own ``driver = noop`` when the kit publishes to the same
  broker, and that must not silence the kit. Other transports (``kafka://``,
  ``fake://``) are a ConfigError naming the option: the kit cannot publish there.
* **Precedence**: keyword arguments, then the paste section, then the file, then
  ``INSTRUMENT_*`` variables, then defaults. A paste option wins under any of its names
  (``notifier_strategy`` keeps the file's strategy out), and a broker address given in
  paste (``rabbit_host``, ``qpid_hostname``, ``transport_url`` & co) keeps the file's
  ``transport_url`` out altogether: one address, never half of each.
* **Which file**: ``oslo_config_file`` if given (it must exist). Otherwise
  ``$OS_<PROJECT>_CONFIG_DIR/<project>-api.conf`` (the folder Glance's WSGI application
  reads, ``OS_GLANCE_CONFIG_DIR``) when it exists, else oslo.config's own search
  (``~/.glance/``, ``~/``, ``/etc/glance/``, ``/etc/``) for ``glance.conf`` and
  ``glance-api.conf``. Finding no file is a ConfigError naming ``oslo_config_project``.
* oslo.config is an optional extra (``instrument[oslo]``), imported only when asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any, Final

from .config import CORE_OPTIONS, Settings
from .exceptions import ConfigError
from .options import Option, boolean, string

__all__ = ["OSLO_OPTIONS", "from_service_config", "service_options"]

log = logging.getLogger("instrument.oslo")

PROJECT_OPTION: Final = Option(
    "oslo_config_project",
    None,
    "Read the broker from this service's oslo.config file (glance: glance-api.conf's "
    "[oslo_messaging_notifications] transport_url, else [DEFAULT] transport_url, with "
    "driver, topics, control_exchange and [oslo_messaging_rabbit] ssl/durability); "
    "options in this section win. Needs instrument[oslo].",
    string,
)
FILE_OPTION: Final = Option(
    "oslo_config_file",
    None,
    "With oslo_config_project: this file instead of the project's usual one.",
    string,
)
OSLO_OPTIONS: Final = (PROJECT_OPTION, FILE_OPTION)

#: Paste options that name a broker: any of them keeps the file's transport_url out.
ADDRESS_NAMES: Final = frozenset(
    {
        *(f"rabbit_{name}" for name in ("host", "port", "userid", "password", "virtual_host")),
        *(f"qpid_{name}" for name in ("hostname", "port", "username", "password")),
        "transport_url",
        "qpid_transport_url",
    }
)
#: The kit's strategy for each oslo.messaging transport scheme it can publish to.
SCHEMES: Final = {"rabbit": "rabbit", "amqp": "qpid"}
ENVELOPES: Final = {"messagingv2": "messagingv2", "messaging": "plain"}
#: ([oslo_messaging_rabbit] option, the kit's options it sets).
RABBIT_MAPPED: Final = (
    ("amqp_durable_queues", ("rabbit_durable_queues", "qpid_durable_queues")),
    ("ssl", ("rabbit_use_ssl",)),
    ("ssl_ca_file", ("rabbit_ssl_ca_file",)),
    ("ssl_cert_file", ("rabbit_ssl_cert_file",)),
    ("ssl_key_file", ("rabbit_ssl_key_file",)),
    ("rabbit_quorum_queue", ("rabbit_quorum_queue", "qpid_quorum_queue")),
)
#: [oslo_messaging_rabbit]'s quorum limits, read only with rabbit_quorum_queue (as oslo).
QUORUM_LIMITS: Final = (
    "quorum_delivery_limit",
    "quorum_max_memory_length",
    "quorum_max_memory_bytes",
)
#: oslo.messaging's transport when none is configured: ``rabbit://``, which its rabbit
#: driver takes as guest on localhost.
DEFAULT_TRANSPORT: Final = "rabbit://guest:guest@localhost:5672/"


def from_service_config(local_conf: Mapping[str, Any]) -> dict[str, Any]:
    """*local_conf* over what the service's own file says (see the module doc).

    Without ``oslo_config_project`` it is *local_conf* unchanged.
    """
    located = Settings.load(local_conf)  # the file may be named in the environment too
    project = located.get(PROJECT_OPTION)
    if not project:
        return dict(local_conf)
    local = Settings(local_conf)
    given = local.names()
    # A broker given in the filter's section keeps the file's transport out; with a
    # strategy given there too, even one the kit could not publish to (kafka://).
    broker_given = bool(given & ADDRESS_NAMES)
    named = broker_given and bool(given & _names_of("strategy"))
    found = service_options(project, located.get(FILE_OPTION), transport=not named)
    if broker_given:
        found.pop("transport_url", None)
    kept = {name: value for name, value in found.items() if not given & _names_of(name)}
    for prefix in ("rabbit", "qpid"):
        choice = f"{prefix}_quorum_queue"
        if choice in given and not local.get(Option(choice, False, "", boolean)):
            # No quorum queues after all: the file's limits go with the file's choice.
            for limit in QUORUM_LIMITS:
                kept.pop(f"{prefix}_{limit}", None)
    return {**kept, **local_conf}


def service_options(
    project: str, path: str | None = None, *, transport: bool = True
) -> dict[str, Any]:
    """The kit's options as *project*'s oslo.config file sets them (ConfigError if unread);
    without *transport*, its transport URL is not read."""
    conf = _load(project, path)
    try:
        return _mapped(conf, project, transport)
    except ConfigError:
        raise
    except ValueError as exc:  # a value oslo.config cannot parse (read lazily)
        option = FILE_OPTION.name if path else PROJECT_OPTION.name
        raise ConfigError(option, path or project, f"valid option values ({exc})") from exc


def _mapped(conf: Any, project: str, transport: bool = True) -> dict[str, Any]:
    found: dict[str, Any] = {}
    notifications = conf.oslo_messaging_notifications
    envelopes = [ENVELOPES[d] for d in notifications.driver or () if d in ENVELOPES]
    url = (notifications.transport_url or conf.transport_url) if transport else None
    if transport and not url:
        if envelopes:  # the service itself publishes, to oslo.messaging's default
            url = DEFAULT_TRANSPORT
        else:
            log.warning(
                "instrument: %s's configuration names no transport_url (nor a messaging "
                "driver): the kit takes no broker from it",
                project,
            )
    if url:
        found["strategy"] = _strategy_of(url)
        found["transport_url"] = url
    if envelopes:
        found["envelope"] = envelopes[0]
    topics = list(notifications.topics or ())
    if len(topics) > 1:
        log.warning(
            "instrument: %s lists topics %s; the kit sends to %r", project, topics, topics[0]
        )
    found.update(_both("notification_topic", topics[0] if topics else None))
    found.update(_both("notification_exchange", conf.control_exchange))
    rabbit = conf.oslo_messaging_rabbit
    for option, names in RABBIT_MAPPED:
        value = rabbit[option]
        if value not in (None, ""):
            found.update(dict.fromkeys(names, value))
    if rabbit.rabbit_quorum_queue:
        for limit in QUORUM_LIMITS:
            found.update(_both(limit, rabbit[f"rabbit_{limit}"]))
    if conf.default_publisher_id:
        found["publisher_id"] = conf.default_publisher_id
    if conf.disabled_notifications:
        found["disabled_notifications"] = ",".join(conf.disabled_notifications)
    return found


def _both(suffix: str, value: Any) -> dict[str, Any]:
    return {} if not value else {f"rabbit_{suffix}": value, f"qpid_{suffix}": value}


def _names_of(name: str) -> frozenset[str]:
    """*name* and its aliases (only the core's strategy option has any among those set)."""
    strategy = CORE_OPTIONS[0]
    return frozenset(strategy.names) if name == strategy.name else frozenset({name})


def _strategy_of(url: str) -> str:
    scheme = url.partition(":")[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            "[oslo_messaging_notifications] transport_url",
            f"{scheme}://…",
            "a rabbit:// or amqp:// URL "
            "(or notifier_strategy and a broker given in the filter's section)",
        )
    return SCHEMES[scheme]


def _load(project: str, path: str | None) -> Any:
    """A local ConfigOpts with the options the kit maps, read from *project*'s file."""
    try:
        from oslo_config import cfg
    except ImportError:
        raise ConfigError(
            PROJECT_OPTION.name, project, "oslo.config installed: pip install 'instrument[oslo]'"
        ) from None
    if path is not None and not os.path.isfile(path):
        raise ConfigError(FILE_OPTION.name, path, "an existing oslo.config file")
    conf = cfg.ConfigOpts()
    for group, opts in _declarations(cfg):
        conf.register_opts(opts, group=group)
    files = [path] if path else _project_files(project)
    try:
        conf([], project=project, prog=f"{project}-api", default_config_files=files)
    except cfg.Error as exc:
        option = FILE_OPTION.name if path else PROJECT_OPTION.name
        raise ConfigError(option, path or project, f"a readable oslo.config file ({exc})") from exc
    if not conf.config_file:
        raise ConfigError(
            PROJECT_OPTION.name,
            project,
            f"a project with a configuration file ({project}.conf or {project}-api.conf in "
            f"$OS_{project.upper()}_CONFIG_DIR, ~/.{project}, ~, /etc/{project}, /etc), "
            "or oslo_config_file",
        )
    return conf


def _project_files(project: str) -> list[str] | None:
    """``$OS_<PROJECT>_CONFIG_DIR/<project>-api.conf`` if it exists; None: oslo's search."""
    folder = os.environ.get(f"OS_{project.upper()}_CONFIG_DIR")
    candidate = os.path.join(folder, f"{project}-api.conf") if folder else ""
    return [candidate] if candidate and os.path.isfile(candidate) else None


def _declarations(cfg: Any) -> Iterator[tuple[str | None, list[Any]]]:
    """oslo.messaging's declarations of the options the kit maps (its names and types)."""
    url = cfg.StrOpt("transport_url", secret=True)
    yield (
        None,
        [
            url,
            cfg.StrOpt("control_exchange"),
            # Glance's own (glance/notifier.py); no default here: only a value set counts.
            cfg.StrOpt("default_publisher_id"),
            cfg.ListOpt("disabled_notifications", default=[]),
        ],
    )
    yield (
        "oslo_messaging_notifications",
        [
            url,
            cfg.MultiStrOpt("driver", default=[]),
            cfg.ListOpt("topics", default=["notifications"]),
        ],
    )
    yield (
        "oslo_messaging_rabbit",
        [
            cfg.BoolOpt("amqp_durable_queues"),
            cfg.BoolOpt("ssl"),
            *(cfg.StrOpt(name) for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file")),
            cfg.BoolOpt("rabbit_quorum_queue"),
            *(cfg.IntOpt(f"rabbit_{limit}", default=0, min=0) for limit in QUORUM_LIMITS),
        ],
    )
