"""Shared fixtures: the real RabbitMQ nodes the broker tests use."""

pytest_plugins = ["tests.support.rabbitmq_fixtures"]
