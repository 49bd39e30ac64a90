"""Configuration: sources, precedence, Glance's option names and clear errors."""

from __future__ import annotations

import warnings

import pytest

from instrument import ConfigError, Notifier, Settings
from instrument.config import UnknownOptionWarning


def test_glance_notifier_strategy_name_selects_the_strategy() -> None:
    notifier = Notifier.from_config({"notifier_strategy": "logging"})
    assert [s.name for s in notifier.strategies] == ["logging"]


def test_strategy_list_fans_out_and_duplicates_collapse() -> None:
    notifier = Notifier.from_config(strategy="memory, logging,memory")
    assert [s.name for s in notifier.strategies] == ["memory", "logging"]


def test_paste_bookkeeping_keys_are_ignored_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Notifier.from_config({"use": "egg:instrument#notifications", "__file__": "x", "here": "/"})


def test_environment_fills_gaps_and_explicit_values_win() -> None:
    environ = {
        "INSTRUMENT_STRATEGY": "memory",
        "INSTRUMENT_PUBLISHER_ID": "from-env",
        "INSTRUMENT_DISABLED_NOTIFICATIONS": "image.send",
        "UNRELATED": "1",
    }
    settings = Settings.load({"publisher_id": "from-paste"}, environ=environ)
    assert settings.strategies == ("memory",)
    assert settings.publisher_id == "from-paste"
    assert settings.disabled_notifications == ("image.send",)
    assert Settings.load({"publisher_id": "p"}, environ={}, publisher_id="kw").publisher_id == "kw"


def test_from_env_reads_only_prefixed_variables() -> None:
    settings = Settings.load(environ={"INSTRUMENT_REDACT": "owner,checksum", "REDACT": "x"})
    assert settings.redact == ("owner", "checksum")


def test_unknown_strategy_names_the_option_value_and_accepted_values() -> None:
    with pytest.raises(ConfigError) as caught:
        Notifier.from_config(notifier_strategy="rabit")
    message = str(caught.value)
    assert "'strategy'" in message and "'rabit'" in message
    for name in ("noop", "logging", "memory", "rabbit", "qpid"):
        assert name in message


def test_bad_value_names_the_option_and_accepted_values() -> None:
    with pytest.raises(ConfigError) as caught:
        Notifier.from_config(strategy="memory", memory_max="lots")
    assert (
        str(caught.value)
        == "invalid value 'lots' for option 'memory_max': expected an integer >= 0"
    )
    assert caught.value.option == "memory_max"


def test_unknown_option_warns_with_the_closest_name() -> None:
    with pytest.warns(UnknownOptionWarning, match=r"'memory_maxx' \(did you mean memory_max\?\)"):
        Notifier.from_config(strategy="memory", memory_maxx="3")


def test_unknown_option_without_a_close_name_still_warns() -> None:
    with pytest.warns(UnknownOptionWarning, match="'zzz_qqq'; it is ignored"):
        Notifier.from_config(zzz_qqq="1")


def test_options_of_unselected_strategies_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Notifier.from_config(strategy="noop", log_file="/tmp/x.log", memory_max="3")


def test_keyword_values_may_be_python_values() -> None:
    notifier = Notifier.from_config(strategy=["memory"], memory_max=2, redact=("owner",))
    assert notifier.redact == ("owner",)
    assert notifier.strategies[0].memory_max == 2  # type: ignore[attr-defined]


def test_an_option_given_higher_up_wins_under_any_of_its_names() -> None:
    """The filter's section beats the environment, keywords beat the section, whether
    they use Glance's name or the kit's."""
    paste = Settings.load({"notifier_strategy": "logging"}, environ={"INSTRUMENT_STRATEGY": "x"})
    assert paste.strategies == ("logging",)
    publisher = Settings.load(
        {"default_publisher_id": "glance-api-1"}, environ={"INSTRUMENT_PUBLISHER_ID": "env"}
    )
    assert publisher.publisher_id == "glance-api-1"
    keyword = Settings.load({"strategy": "logging"}, environ={}, notifier_strategy="memory")
    assert keyword.strategies == ("memory",)


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("amqp://glance:pa#ss3cret@rabbit1:5672/", "pa#ss3cret"),
        ("amqp://glance:s3cr/et99@rabbit1:5672/", "s3cr/et99"),
        ("rabbit://glance:ok@h1,glance:se?cret77@h2/", "se?cret77"),
    ],
)
@pytest.mark.parametrize("strategy", ["rabbit", "qpid"])
def test_a_bad_transport_url_never_shows_its_password(url: str, secret: str, strategy: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Notifier.from_config({"strategy": strategy, "transport_url": url}, environ={})
    for part in (secret, secret[2:]):  # neither the password nor its tail
        assert part not in str(refused.value)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", float("inf")])
def test_a_timeout_must_be_a_finite_number(value: object) -> None:
    with pytest.raises(ConfigError) as refused:
        Notifier.from_config({"strategy": "rabbit", "rabbit_connect_timeout": value}, environ={})
    assert "rabbit_connect_timeout" in str(refused.value) and "finite" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("amqp://guest:s3cret@broker:5672/team@prod", "s3cret"),
        ("amqp://u@h1,u2:p2@h2/", "p2"),
        ("amqp://glance:1234#x@host/", "1234#x"),
        ("amqp://glance:s3cr/et@host:5672/", "s3cr/et"),
        ("amqp://glance:a@b/c@host:5672/", "a@b/c"),
        ("amqp://glance:1234/x@host:5672/", "1234/x"),
        ("amqp://glance:/x@host/", "/x"),
        ("amqp://glance:12?/x@host/", "12?/x"),
        ("rabbit://glance:ok@h1,glance:se?cret77@h2/", "se?cret77"),
    ],
)
def test_mask_url_never_shows_a_password(url: str, password: str) -> None:
    from instrument.strategies._urls import mask_url

    masked = mask_url(url)
    assert password not in masked and "****" in masked
    assert len(password) < 4 or password[1:] not in masked  # nor its tail


def test_mask_url_leaves_a_url_without_userinfo_alone() -> None:
    from instrument.strategies._urls import mask_url

    for url in ("amqp://broker.example.org:5672/glance", "amqp://[::1]:5672/", "amqp://u@h/"):
        assert mask_url(url) == url
