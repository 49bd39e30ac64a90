"""The exceptions that ``instrument`` raises.

Only configuration and explicit checks raise; emitting a notification never does.
The tree is small on purpose::

    InstrumentError
    ├── ConfigError          a bad option, value or strategy name, raised at start-up
    └── StrategyError        a strategy cannot deliver (raised by ``check()`` and
        │                    caught, counted and logged everywhere else)
        └── DeliveryError    a broker refused or lost a notification
"""

from __future__ import annotations

__all__ = ["ConfigError", "DeliveryError", "InstrumentError", "StrategyError"]


class InstrumentError(Exception):
    """Base class of every exception raised by ``instrument``."""


class ConfigError(InstrumentError, ValueError):
    """An option has a bad value, or names an unknown strategy.

    The message always names the option, the value given and the accepted values,
    so that an operator can fix the paste.ini without reading code.
    """

    def __init__(self, option: str, value: object, accepted: str) -> None:
        self.option = option
        self.value = value
        self.accepted = accepted
        super().__init__(f"invalid value {value!r} for option {option!r}: expected {accepted}")


class StrategyError(InstrumentError):
    """A strategy could not deliver, or its start-up check failed."""


class DeliveryError(StrategyError):
    """A broker refused a notification or did not confirm it."""
