"""The broker read from the service's own oslo.config file (``oslo_config_project``)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from instrument import ConfigError
from instrument.middleware import NotificationMiddleware, filter_factory
from instrument.oslo import from_service_config, service_options

URL = "rabbit://glance:s3cret@broker.example.org:5672/glance"


def write_conf(folder: Path, body: str, name: str = "glance-api.conf") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def no_project_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of its own and no OS_*_CONFIG_DIR: only what a test writes is found."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("OS_GLANCE_CONFIG_DIR", "OS_NOSUCHSERVICE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_without_a_project_the_paste_section_is_all() -> None:
    assert from_service_config({"strategy": "memory"}) == {"strategy": "memory"}


def test_notifications_section_maps_to_the_kits_options(tmp_path: Path) -> None:
    path = write_conf(
        tmp_path,
        f"""\
        [DEFAULT]
        transport_url = rabbit://other:other@elsewhere:5672/
        control_exchange = images

        [oslo_messaging_notifications]
        driver = messagingv2
        transport_url = {URL}
        topics = notifications,audit

        [oslo_messaging_rabbit]
        amqp_durable_queues = true
        ssl = true
        ssl_ca_file = /etc/ssl/ca.pem
        """,
    )
    assert service_options("glance", str(path)) == {
        "strategy": "rabbit",
        "transport_url": URL,
        "envelope": "messagingv2",
        "rabbit_notification_topic": "notifications",
        "qpid_notification_topic": "notifications",
        "rabbit_notification_exchange": "images",
        "qpid_notification_exchange": "images",
        "rabbit_durable_queues": True,
        "qpid_durable_queues": True,
        "rabbit_use_ssl": True,
        "rabbit_ssl_ca_file": "/etc/ssl/ca.pem",
    }


def test_default_transport_url_when_notifications_has_none(tmp_path: Path) -> None:
    path = write_conf(tmp_path, f"[DEFAULT]\ntransport_url = {URL}\n")
    found = service_options("glance", str(path))
    assert found["transport_url"] == URL and found["strategy"] == "rabbit"
    assert "envelope" not in found and "rabbit_notification_exchange" not in found


def test_amqp_urls_are_oslos_amqp1_driver_so_qpid(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "[DEFAULT]\ntransport_url = amqp://u:p@qpid:5672/\n")
    assert service_options("glance", str(path))["strategy"] == "qpid"


def test_glance_driver_noop_does_not_silence_the_kit(tmp_path: Path) -> None:
    conf = f"[oslo_messaging_notifications]\ndriver = noop\ntransport_url = {URL}\n"
    found = service_options("glance", str(write_conf(tmp_path, conf)))
    assert found["strategy"] == "rabbit" and "envelope" not in found


def test_paste_options_win_under_any_name(tmp_path: Path) -> None:
    path = write_conf(
        tmp_path, f"[oslo_messaging_notifications]\ndriver = messaging\ntransport_url = {URL}\n"
    )
    merged = from_service_config(
        {
            "oslo_config_project": "glance",
            "oslo_config_file": str(path),
            "notifier_strategy": "logging",
            "envelope": "messagingv2",
        }
    )
    assert "strategy" not in merged and merged["notifier_strategy"] == "logging"
    assert merged["envelope"] == "messagingv2" and merged["transport_url"] == URL


def test_a_paste_broker_address_keeps_the_files_url_out(tmp_path: Path) -> None:
    path = write_conf(tmp_path, f"[DEFAULT]\ntransport_url = {URL}\n")
    paste = {"oslo_config_project": "glance", "oslo_config_file": str(path)}
    merged = from_service_config({**paste, "rabbit_host": "paste-broker"})
    assert "transport_url" not in merged and merged["rabbit_host"] == "paste-broker"
    assert merged["strategy"] == "rabbit"


def test_the_folder_glance_reads_is_searched_first(
    no_project_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = no_project_files / "etc"
    folder.mkdir()
    write_conf(folder, f"[DEFAULT]\ntransport_url = {URL}\n")
    monkeypatch.setenv("OS_GLANCE_CONFIG_DIR", str(folder))
    assert service_options("glance")["transport_url"] == URL


def test_oslo_configs_own_search_finds_the_project_file(no_project_files: Path) -> None:
    folder = no_project_files / ".glance"
    folder.mkdir()
    write_conf(folder, f"[DEFAULT]\ntransport_url = {URL}\n")
    assert service_options("glance")["transport_url"] == URL


def test_a_project_without_a_file_names_the_option(no_project_files: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        service_options("nosuchservice")
    assert caught.value.option == "oslo_config_project"
    assert "nosuchservice-api.conf" in str(caught.value)


def test_a_missing_file_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        from_service_config(
            {"oslo_config_project": "glance", "oslo_config_file": str(tmp_path / "nope.conf")}
        )
    assert caught.value.option == "oslo_config_file"


@pytest.mark.parametrize(
    "body", ["[DEFAULT\ntransport_url = x\n", "[oslo_messaging_rabbit]\nssl = maybe\n"]
)
def test_an_unreadable_file_names_the_option(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError) as caught:
        service_options("glance", str(write_conf(tmp_path, body)))
    assert caught.value.option == "oslo_config_file"


def test_a_transport_the_kit_cannot_publish_to_is_an_error_without_the_password(
    tmp_path: Path,
) -> None:
    path = write_conf(tmp_path, "[DEFAULT]\ntransport_url = kafka://u:s3cret@k:9092/\n")
    with pytest.raises(ConfigError) as caught:
        service_options("glance", str(path))
    assert "transport_url" in caught.value.option and "s3cret" not in str(caught.value)


def test_without_oslo_config_the_error_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "oslo_config", None)
    with pytest.raises(ConfigError, match=r"instrument\[oslo\]") as caught:
        filter_factory({}, oslo_config_project="glance")
    assert caught.value.option == "oslo_config_project"


def test_the_filter_publishes_where_the_file_says(tmp_path: Path) -> None:
    conf = "[oslo_messaging_notifications]\ndriver = messagingv2\ntransport_url = memory:///\n"
    path = write_conf(tmp_path, conf)
    with pytest.raises(ConfigError):  # memory:// is no oslo.messaging notification transport
        filter_factory({}, oslo_config_project="glance", oslo_config_file=str(path))
    write_conf(tmp_path, f"[DEFAULT]\ntransport_url = {URL}\n")
    app: Any = filter_factory({}, oslo_config_project="glance", oslo_config_file=str(path))(
        lambda environ, start_response: []
    )
    assert isinstance(app, NotificationMiddleware)
    try:
        (strategy,) = app.notifier.strategies
        assert strategy.name == "rabbit"
        assert strategy.target.urls == ("amqp://glance:s3cret@broker.example.org:5672/glance",)
    finally:
        app.notifier.close()


def test_the_service_file_may_be_named_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_conf(tmp_path, f"[DEFAULT]\ntransport_url = {URL}\n")
    monkeypatch.setenv("INSTRUMENT_OSLO_CONFIG_PROJECT", "glance")
    monkeypatch.setenv("INSTRUMENT_OSLO_CONFIG_FILE", str(path))
    assert from_service_config({})["transport_url"] == URL
    monkeypatch.setenv("INSTRUMENT_OSLO_CONFIG_FILE", str(tmp_path / "missing.conf"))
    with pytest.raises(ConfigError):
        filter_factory({})


def test_a_paste_broker_keeps_out_a_file_transport_the_kit_cannot_publish_to(
    tmp_path: Path,
) -> None:
    path = write_conf(tmp_path, "[oslo_messaging_notifications]\ntransport_url = kafka://k1/\n")
    merged = from_service_config(
        {
            "oslo_config_project": "glance",
            "oslo_config_file": str(path),
            "notifier_strategy": "rabbit",
            "transport_url": "memory://",
        }
    )
    assert merged["transport_url"] == "memory://" and merged["notifier_strategy"] == "rabbit"


def test_a_paste_broker_without_a_strategy_still_refuses_a_file_transport_it_cannot_use(
    tmp_path: Path,
) -> None:
    path = write_conf(tmp_path, "[oslo_messaging_notifications]\ntransport_url = kafka://k1/\n")
    paste = {"oslo_config_project": "glance", "oslo_config_file": str(path), "rabbit_host": "r"}
    with pytest.raises(ConfigError, match="notifier_strategy and a broker"):
        from_service_config(paste)


def test_quorum_queues_and_their_limits_map_as_oslo_reads_them(tmp_path: Path) -> None:
    """kolla-ansible's ``rabbit_quorum_queue``: the kit must declare what Glance's own
    notifier and Ceilometer declare, or their declarations fail on the kit's."""
    conf = f"""\
        [oslo_messaging_notifications]
        transport_url = {URL}

        [oslo_messaging_rabbit]
        rabbit_quorum_queue = true
        rabbit_quorum_delivery_limit = 5
        rabbit_quorum_max_memory_bytes = 1000
        """
    found = service_options("glance", str(write_conf(tmp_path, conf)))
    assert {k: v for k, v in found.items() if "quorum" in k} == {
        "rabbit_quorum_queue": True,
        "qpid_quorum_queue": True,
        "rabbit_quorum_delivery_limit": 5,
        "qpid_quorum_delivery_limit": 5,
        "rabbit_quorum_max_memory_bytes": 1000,
        "qpid_quorum_max_memory_bytes": 1000,
    }
    # oslo ignores the limits without quorum queues; so does the kit (a limit given
    # without quorum queues would be a ConfigError)
    without = conf.replace("rabbit_quorum_queue = true", "rabbit_quorum_queue = false")
    found = service_options("glance", str(write_conf(tmp_path, without)))
    assert {k: v for k, v in found.items() if "quorum" in k} == {
        "rabbit_quorum_queue": False,
        "qpid_quorum_queue": False,
    }


def test_a_messaging_driver_without_a_transport_url_publishes_to_oslos_default(
    tmp_path: Path,
) -> None:
    conf = "[oslo_messaging_notifications]\ndriver = messagingv2\n"
    path = write_conf(tmp_path, conf)
    found = service_options("glance", str(path))
    assert found["strategy"] == "rabbit"
    # and the filter starts with it (a URL without a host would stop the service)
    filtered = filter_factory({}, oslo_config_project="glance", oslo_config_file=str(path))(
        lambda environ, start_response: []
    )
    try:
        (strategy,) = filtered.notifier.strategies
        assert strategy.target.urls == ("amqp://guest:guest@localhost:5672/",)
    finally:
        filtered.notifier.close()


def test_the_filters_quorum_choice_takes_the_files_quorum_limits_with_it(tmp_path: Path) -> None:
    conf = f"""\
        [oslo_messaging_notifications]
        transport_url = {URL}

        [oslo_messaging_rabbit]
        rabbit_quorum_queue = true
        rabbit_quorum_delivery_limit = 10
        """
    path = write_conf(tmp_path, conf)
    local = {"oslo_config_project": "glance", "oslo_config_file": str(path)}
    merged = from_service_config({**local, "rabbit_quorum_queue": "false"})
    assert "rabbit_quorum_delivery_limit" not in merged
    filter_factory({}, **local, rabbit_quorum_queue="false")(lambda e, s: []).notifier.close()
    # the same choice said again keeps them: the queues must match oslo's declarations
    merged = from_service_config({**local, "rabbit_quorum_queue": "true"})
    assert merged["rabbit_quorum_delivery_limit"] == 10
    # under any spelling paste allows
    assert "rabbit_quorum_delivery_limit" not in from_service_config(
        {**local, "Rabbit-Quorum-Queue": "no"}
    )


def test_a_file_naming_no_broker_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = "[oslo_messaging_notifications]\ndriver = noop\n"
    found = service_options("glance", str(write_conf(tmp_path, conf)))
    assert "strategy" not in found and "transport_url" not in found
    assert "names no transport_url" in caplog.text


def test_glances_publisher_id_and_disabled_notifications_are_read(tmp_path: Path) -> None:
    conf = f"""\
        [DEFAULT]
        transport_url = {URL}
        default_publisher_id = image.api-node-7
        disabled_notifications = image.send,image.member
        """
    found = service_options("glance", str(write_conf(tmp_path, conf)))
    assert found["publisher_id"] == "image.api-node-7"
    assert found["disabled_notifications"] == "image.send,image.member"
    unset = service_options(
        "glance", str(write_conf(tmp_path, f"[DEFAULT]\ntransport_url = {URL}\n"))
    )
    assert "publisher_id" not in unset and "disabled_notifications" not in unset
