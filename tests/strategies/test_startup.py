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
]

NON_STRING_SECRETS = [
    ({"strategy": "rabbit", "rabbit_password": 123456789}, "rabbit_password", "123456789"),
    ({"strategy": "rabbit", "transport_url": b"amqp://u:S3CRET-pw@h//"}, "transport_url", SECRET),
    ({"strategy": "qpid", "qpid_password": [SECRET]}, "qpid_password", SECRET),
    ({"strategy": "qpid", "transport_url": 12345.678}, "transport_url", "12345.678"),
]


@pytest.mark.parametrize(("options", "option"), BAD_URLS)
def test_a_malformed_broker_option_is_a_config_error_naming_it(
    options: dict[str, Any], option: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Notifier.from_config(**options)
    assert raised.value.option == option
    assert SECRET not in str(raised.value) and SECRET not in repr(raised.value.value)


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
