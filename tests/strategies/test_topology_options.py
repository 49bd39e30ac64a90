"""Quorum options (oslo.messaging's names) and reading RabbitMQ's inequivalence messages.

No broker here: the options are validated when a strategy is made, and the messages are
the ones RabbitMQ 3.10 sends (copied from a real node).
"""

from __future__ import annotations

import pytest

from instrument.config import Settings
from instrument.exceptions import ConfigError
from instrument.strategies._differences import Difference, parse_inequivalence
from instrument.strategies.qpid import QpidStrategy
from instrument.strategies.rabbit import RabbitStrategy

STRATEGIES = {"rabbit": RabbitStrategy, "qpid": QpidStrategy}


@pytest.mark.parametrize("prefix", list(STRATEGIES))
def test_quorum_options_have_oslo_names_and_defaults(prefix: str) -> None:
    defaults = {option.name: option.default for option in STRATEGIES[prefix].options}
    assert {
        f"{prefix}_quorum_queue": False,
        f"{prefix}_quorum_delivery_limit": 0,
        f"{prefix}_quorum_max_memory_length": 0,
        f"{prefix}_quorum_max_memory_bytes": 0,
    }.items() <= defaults.items()


@pytest.mark.parametrize("prefix", list(STRATEGIES))
def test_quorum_options_become_queue_arguments(prefix: str) -> None:
    with STRATEGIES[prefix].from_settings(
        Settings(
            {
                f"{prefix}_quorum_queue": "true",
                f"{prefix}_quorum_delivery_limit": "5",
                f"{prefix}_quorum_max_memory_bytes": "1048576",
            }
        )
    ) as strategy:
        spec = strategy.target.topology.queue_spec()
    assert spec == {
        "durable": True,  # quorum queues always are, whatever *_durable_queues says
        "auto_delete": False,
        "exclusive": False,
        "x-queue-type": "quorum",
        "x-delivery-limit": 5,
        "x-max-in-memory-bytes": 1048576,
    }


@pytest.mark.parametrize("prefix", list(STRATEGIES))
@pytest.mark.parametrize(
    ("given", "option", "accepted"),
    [
        ({"quorum_queue": "maybe"}, "quorum_queue", "a boolean"),
        ({"quorum_queue": True, "quorum_delivery_limit": -1}, "quorum_delivery_limit", ">= 0"),
        ({"quorum_queue": True, "quorum_max_memory_length": "x"}, "quorum_max_memory_length", "an"),
        ({"quorum_max_memory_bytes": 10}, "quorum_queue", "true (PREFIX_quorum_max_memory_bytes"),
    ],
)
def test_bad_quorum_options_are_config_errors(
    prefix: str, given: dict[str, object], option: str, accepted: str
) -> None:
    values = {f"{prefix}_{name}": value for name, value in given.items()}
    with pytest.raises(ConfigError) as raised:
        STRATEGIES[prefix](**values)
    assert raised.value.option == f"{prefix}_{option}"
    assert accepted.replace("PREFIX", prefix) in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'glance' in vhost "
            "'/': received 'false' but current is 'true'",
            Difference("durable", False, True),
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'ex1' in vhost '/': "
            "received 'fanout' but current is 'topic'",
            Difference("type", "fanout", "topic"),
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'qq' in vhost '/': "
            "received none but current is the value 'quorum' of type 'longstr'",
            Difference("x-queue-type", None, "quorum"),
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'qq' in vhost "
            "'/': received the value '3' of type 'signedint' but current is none",
            Difference("x-delivery-limit", 3, None),
        ),
    ],
)
def test_rabbitmq_inequivalence_messages_are_read(text: str, expected: Difference) -> None:
    assert parse_inequivalence(text) == expected


def test_an_unknown_message_or_value_type_is_not_guessed() -> None:
    assert parse_inequivalence("PRECONDITION_FAILED - something else") is None
    assert (
        parse_inequivalence(
            "inequivalent arg 'x-a' for queue 'q' in vhost '/': received none but current "
            "is the value '[1]' of type 'array'"
        )
        is None
    )


def test_a_difference_moves_the_probe_to_what_exists() -> None:
    probe = {"durable": False, "x-delivery-limit": 3}
    probe = Difference("durable", False, True).apply(probe)
    probe = Difference("x-delivery-limit", 3, None).apply(probe)
    probe = Difference("x-queue-type", None, "stream").apply(probe)
    assert probe == {"durable": True, "x-queue-type": "stream"}
