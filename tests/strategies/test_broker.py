"""What both broker strategies share (instrument/strategies/_broker.py), without a broker."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from instrument.config import Settings
from instrument.exceptions import StrategyError
from instrument.strategies._broker import failover, run_once, split_transport_url


def test_transport_urls_split_on_semicolons_and_oslo_commas() -> None:
    url = "amqp://u:p@h1:5672,u:p@h2:5673/vh; amqps://h3//"
    assert split_transport_url(url, hostless=False) == [
        "amqp://u:p@h1:5672/vh",
        "amqp://u:p@h2:5673/vh",
        "amqps://h3//",
    ]
    assert split_transport_url("memory://", hostless=True) == ["memory://"]
    assert split_transport_url("memory://", hostless=False) == []


def test_failover_starts_where_it_worked_and_says_why_each_host_failed() -> None:
    tried: list[str] = []
    closed: list[int] = []

    def open_(host: str) -> None:
        tried.append(host)
        if host != "c":
            raise OSError(f"{host} down")

    def reason(host: str, exc: Exception) -> str:
        return f"{host}: {exc}"

    assert failover(["a", "b", "c"], 1, open_, reason, lambda: closed.append(1)) == 2
    assert tried == ["b", "c"] and closed == [1]
    with pytest.raises(StrategyError, match="a: a down; b: b down"):
        failover(["a", "b"], 0, open_, reason, lambda: None)


def test_run_once_runs_once() -> None:
    calls: list[str] = []

    @run_once
    def warn(text: str) -> None:
        calls.append(text)

    warn("first")
    warn("second")
    assert calls == ["first"] and warn.done


@pytest.mark.parametrize("name", ["rabbit", "qpid"])
def test_options_from_settings_are_parsed_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from instrument.strategies import strategy_class

    pytest.importorskip("kombu" if name == "rabbit" else "proton")
    cls = strategy_class(name)
    parsed: list[str] = []

    def counting(parse: Any) -> Any:
        def count(opt_name: str, value: Any) -> Any:
            parsed.append(opt_name)
            return parse(opt_name, value)

        return count

    counted = tuple(dataclasses.replace(o, parse=counting(o.parse)) for o in cls.options)
    monkeypatch.setattr(cls, "options", counted)
    timeout = f"{name}_connect_timeout"
    with cls.from_settings(Settings({timeout: "2.5", "batch_size": "7"})) as strategy:
        assert strategy.config[timeout] == 2.5 and strategy.target.connect_timeout == 2.5
        assert strategy.config["batch_size"] == 7
    assert sorted(parsed) == sorted(["batch_size", timeout])
