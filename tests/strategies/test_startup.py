"""Start-up checks and secrets of the broker strategies (issue 15), no broker needed.

Every broker option is validated when the strategy is built, ``transport_url``
included, with a ConfigError naming the option; a secret never shows, whatever its
type, in a ConfigError, a repr or ``instrument check``'s one line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from instrument.exceptions import ConfigError
from instrument.notifier import Notifier

pytest.importorskip("kombu")
pytest.importorskip("proton")

ROOT = Path(__file__).resolve().parents[2]
SECRET = "S3CRET-pw"

# (options, the option the ConfigError must name)
BAD_URLS = [
    ({"strategy": "rabbit", "transport_url": f"amqp://u:{SECRET}@h:abc//"}, "transport_url"),
    ({"strategy": "rabbit", "transport_url": f"amqp://u:{SECRET}@h:999999//"}, "transport_url"),
    ({"strategy": "rabbit", "transport_url": f"amqp://u:{SECRET}@h:0//"}, "transport_url"),
    ({"strategy": "rabbit", "transport_url": f"amqp://u:{SECRET}@[::1//"}, "transport_url"),
    ({"strategy": "rabbit", "transport_url": f"amqp://u:{SECRET}@:5672//"}, "transport_url"),
    ({"strategy": "rabbit", "transport_url": f"bogus://u:{SECRET}@h//"}, "transport_url"),
    ({"strategy": "rabbit", "transport_url": f"u:{SECRET}@h:5672"}, "transport_url"),
    ({"strategy": "rabbit", "rabbit_host": "h:abc"}, "rabbit_host"),
    ({"strategy": "rabbit", "rabbit_notification_exchange": ""}, "rabbit_notification_exchange"),
    ({"strategy": "qpid", "transport_url": f"amqp://u:{SECRET}@h:abc"}, "qpid_transport_url"),
    ({"strategy": "qpid", "transport_url": f"amqp://u:{SECRET}@h:70000"}, "qpid_transport_url"),
    ({"strategy": "qpid", "transport_url": f"amqp://u:{SECRET}@[::1:5672"}, "qpid_transport_url"),
    ({"strategy": "qpid", "qpid_hostname": "[::1"}, "qpid_hostname"),
    # A ";" or "," in a password splits the value: no piece may show what precedes it.
    ({"strategy": "rabbit", "transport_url": f"amqp://u:{SECRET};x@h//"}, "transport_url"),
    ({"strategy": "rabbit", "transport_url": f"amqp://u:{SECRET},x@h//"}, "transport_url"),
    ({"strategy": "qpid", "transport_url": f"amqp://u:{SECRET};x@h"}, "qpid_transport_url"),
    ({"strategy": "qpid", "transport_url": f"amqp://u:{SECRET},x@h"}, "qpid_transport_url"),
]

# (options, the option the ConfigError must name): accepted, then failing every delivery
BAD_SETTINGS = [
    ({"strategy": "qpid", "qpid_notification_exchange": ""}, "qpid_notification_exchange"),
    ({"strategy": "qpid", "qpid_notification_topic": ""}, "qpid_notification_topic"),
    ({"strategy": "rabbit", "rabbit_notification_topic": "t" * 250}, "rabbit_notification_topic"),
    ({"strategy": "qpid", "qpid_notification_exchange": "é" * 128}, "qpid_notification_exchange"),
    (
        {"strategy": "rabbit", "rabbit_use_ssl": True, "rabbit_ssl_ca_file": "/nonexistent/c"},
        "rabbit_ssl_ca_file",
    ),
    (
        {"strategy": "qpid", "qpid_protocol": "ssl", "qpid_ssl_cert_file": "/nonexistent/c.pem"},
        "qpid_ssl_cert_file",
    ),
]

NON_STRING_SECRETS = [
    ({"strategy": "rabbit", "rabbit_password": 123456789}, "rabbit_password", "123456789"),
    ({"strategy": "rabbit", "transport_url": b"amqp://u:S3CRET-pw@h//"}, "transport_url", SECRET),
    ({"strategy": "qpid", "qpid_password": [SECRET]}, "qpid_password", SECRET),
    ({"strategy": "qpid", "transport_url": 12345.678}, "transport_url", "12345.678"),
]


@pytest.mark.parametrize(("options", "option"), [*BAD_URLS, *BAD_SETTINGS])
def test_a_bad_broker_option_is_a_config_error_naming_it(
    options: dict[str, Any], option: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Notifier.from_config(**options)
    assert raised.value.option == option
    assert SECRET not in str(raised.value) and SECRET not in repr(raised.value.value)


def test_tls_files_are_not_read_when_tls_is_off() -> None:
    """A file the client never reads does not stop the service (oslo.messaging with
    ``ssl = false`` ignores ``ssl_ca_file`` too)."""
    Notifier.from_config(strategy="rabbit", rabbit_ssl_ca_file="/nonexistent/ca.pem").close()


def test_a_client_certificate_for_the_qpid_strategy_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not read at start-up")
    with pytest.raises(ConfigError) as raised:
        Notifier.from_config(strategy="qpid", qpid_protocol="ssl", qpid_ssl_cert_file=str(cert))
    assert raised.value.option == "qpid_ssl_key_file"


def test_the_qpid_strategy_declares_on_the_urls_virtual_host_and_ipv6_host() -> None:
    from instrument.strategies.qpid._config import Broker
    from instrument.strategies.qpid._declare import _url

    with Notifier.from_config(strategy="qpid", transport_url="amqp://u:p@h:5672/glance%2Fvh") as n:
        (broker,) = n.strategies[0].target.brokers
    assert broker.vhost == "glance/vh"
    assert _url(broker) == "amqp://u:p@h:5672/glance%2Fvh"
    assert _url(Broker("::1", 5672, False, "u", "p")) == "amqp://u:p@[::1]:5672//"


@pytest.mark.parametrize(("broker", "virtual_host"), [("auto", "vhost:glance"), ("qpid", "glance")])
def test_the_virtual_host_is_named_as_the_broker_reads_it(broker: str, virtual_host: str) -> None:
    """RabbitMQ's AMQP 1.0 plugin reads ``vhost:<name>`` in the open frame; a Qpid broker
    the name itself."""
    from instrument.strategies.qpid._connection import _connect_kwargs

    url = "amqp://u:p@h:5672/glance"
    with Notifier.from_config(strategy="qpid", transport_url=url, qpid_broker=broker) as n:
        target = n.strategies[0].target
    assert _connect_kwargs(target, target.brokers[0])["virtual_host"] == virtual_host


@pytest.mark.parametrize(("options", "option", "secret"), NON_STRING_SECRETS)
def test_a_secret_of_any_type_is_never_echoed(
    options: dict[str, Any], option: str, secret: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Notifier.from_config(**options)
    assert raised.value.option == option
    assert secret not in str(raised.value) and secret not in repr(raised.value.value)
    assert "****" in str(raised.value)


def test_ipv6_hosts_are_bracketed_and_accepted() -> None:
    with Notifier.from_config(strategy="rabbit", rabbit_host="::1", rabbit_port=5673) as notifier:
        assert notifier.strategies[0].target.urls[0].startswith("amqp://guest:guest@[::1]:5673/")
    with Notifier.from_config(strategy="qpid", qpid_hostname="::1") as notifier:
        assert notifier.strategies[0].target.brokers[0].url == "amqp://[::1]:5672"


def test_targets_and_brokers_show_no_password_in_repr_or_str() -> None:
    rabbit_url = f"amqp://u:{SECRET}@h1:5672/;amqp://v:{SECRET}2@h2:5672/"
    with (
        Notifier.from_config(strategy="rabbit", transport_url=rabbit_url) as rabbit,
        Notifier.from_config(strategy="qpid", qpid_hostname="h", qpid_password=SECRET) as qpid,
    ):
        targets = [rabbit.strategies[0].target, qpid.strategies[0].target]
        shown = [repr(t) for t in targets] + [str(t) for t in targets]
        shown += [repr(b) for b in targets[1].brokers] + [repr(rabbit), repr(qpid)]
        shown += [str(rabbit.stats()), str(qpid.stats())]
        for text in shown:
            assert SECRET not in text, text
        assert "h1" in repr(targets[0]) and "****" in repr(targets[0])


@pytest.mark.parametrize(
    "option",
    [
        f"transport_url=amqp://u:{SECRET}@h:abc//",
        f"transport_url=amqp://u:{SECRET}@h:999999//",
        f"transport_url=amqp://u:{SECRET}@[::1//",
    ],
)
def test_check_says_a_config_error_in_one_line_and_exits_2(option: str) -> None:
    check = subprocess.run(
        [sys.executable, "-m", "instrument.cli", "check", "-o", "strategy=rabbit", "-o", option],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 2, check.stderr
    lines = check.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error:"), check.stderr
    assert "'transport_url'" in lines[0] and SECRET not in check.stderr + check.stdout
