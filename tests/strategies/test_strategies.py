"""Built-in strategies (logging, memory) and discovery by entry point."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from instrument import ConfigError, Notifier
from instrument.strategies import available_strategies, strategy_class
from instrument.strategies.log import LoggingStrategy
from instrument.strategies.memory import MemoryStrategy


def test_logging_strategy_writes_one_json_line_per_notification_at_the_priority_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier(LoggingStrategy())
    with caplog.at_level(logging.DEBUG, logger="instrument.notifications"):
        sent = [
            notifier.info("image.create", {"id": "1"}),
            notifier.warn("image.upload", "image.upload failed for image 1: 413"),
            notifier.error("image.send", {"bytes_sent": 5}),
        ]
    records = [r for r in caplog.records if r.name.startswith("instrument.notifications")]
    assert [(r.name, r.levelno) for r in records] == [
        ("instrument.notifications.image.create", logging.INFO),
        ("instrument.notifications.image.upload", logging.WARNING),
        ("instrument.notifications.image.send", logging.ERROR),
    ]
    assert [json.loads(r.getMessage()) for r in records] == [n.to_dict() for n in sent if n]


def test_logging_strategy_log_file_gets_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "notifications.log"
    notifier = Notifier.from_config(strategy="logging", log_file=str(path))
    first = notifier.info("image.create", {"id": "1"})
    second = notifier.error("image.send", {"id": "1"})
    notifier.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [first.to_dict(), second.to_dict()]  # type: ignore[union-attr]


def test_memory_strategy_bound_drops_oldest_and_counts() -> None:
    memory = MemoryStrategy(memory_max=2)
    notifier = Notifier(memory)
    for index in range(3):
        notifier.info("image.update", {"id": str(index)})
    assert [n.payload["id"] for n in memory.notifications] == ["1", "2"]
    assert notifier.stats()["memory"]["dropped"] == 1


def test_builtins_are_available_by_name() -> None:
    assert {"noop", "logging", "memory", "rabbit", "qpid"} <= set(available_strategies())
    assert strategy_class("memory") is MemoryStrategy


def test_logging_strategy_counts_a_line_it_cannot_write_as_failed() -> None:
    notifier = Notifier(LoggingStrategy(log_file="/dev/full"))  # every write: ENOSPC
    notifier.info("image.create", {"id": "1"})
    stats = notifier.stats()["logging"]
    assert (stats["sent"], stats["failed"]) == (0, 1)


def test_logging_strategy_refuses_a_log_file_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'log_file'.*existing directory"):
        Notifier.from_config(strategy="logging", log_file=str(tmp_path / "no" / "n.jsonl"))


def test_logging_strategy_starts_a_line_of_its_own_after_a_failed_write(tmp_path: Path) -> None:
    """The disk takes part of a line, then fails (here: a file size limit)."""
    path = tmp_path / "notifications.log"
    script = textwrap.dedent(
        f"""
        import os, resource, signal
        from instrument.events import Notification
        from instrument.strategies.log import LoggingStrategy
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
        strategy = LoggingStrategy({str(path)!r})
        strategy.emit(Notification.create("image.create", "INFO", {{"n": 1}}))
        size = os.path.getsize({str(path)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 200, resource.RLIM_INFINITY))
        try:
            strategy.emit(Notification.create("image.update", "INFO", {{"x": "x" * 20000}}))
        except OSError:
            print("failed")
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        strategy.emit(Notification.create("image.delete", "INFO", {{"n": 3}}))
        strategy.close()
        """
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.stdout.strip() == "failed", ran.stderr
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["event_type"] == "image.create"
    assert json.loads(lines[-1])["event_type"] == "image.delete"  # a line of its own
    assert len(lines) <= 3  # at most what the disk took of the failed line between


def test_logging_strategy_opens_a_log_file_that_was_deleted_again(tmp_path: Path) -> None:
    path = tmp_path / "notifications.jsonl"
    strategy = LoggingStrategy(log_file=str(path))
    notifier = Notifier(strategy)
    notifier.info("image.create", {"id": "1"})
    notifier.info("image.create", {"id": "2"})
    path.unlink()  # rotated away, or removed by an operator
    third = notifier.info("image.create", {"id": "3"})
    strategy.close()
    assert third is not None and third.message_id in path.read_text()


@pytest.fixture
def third_party_distribution(tmp_path: Path) -> Iterator[Path]:
    """Install a throwaway distribution that registers the strategy ``postcard``."""
    (tmp_path / "postcard_strategy.py").write_text(
        textwrap.dedent(
            """
            from instrument import Strategy
            from instrument.options import Option, string

            class PostcardStrategy(Strategy):
                name = "postcard"
                options = (Option("postcard_address", "nowhere", "where to send", string),)
                sent = []

                def __init__(self, postcard_address):
                    self.address = postcard_address

                def emit(self, notification):
                    PostcardStrategy.sent.append((self.address, notification.event_type))
            """
        )
    )
    dist_info = tmp_path / "postcard_strategy-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: postcard-strategy\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[instrument.strategies]\npostcard = postcard_strategy:PostcardStrategy\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("postcard_strategy", None)


@pytest.mark.usefixtures("third_party_distribution")
def test_third_party_strategy_is_found_by_entry_point_with_its_options() -> None:
    assert "postcard" in available_strategies()
    notifier = Notifier.from_config(strategy="postcard,memory", postcard_address="Mars")
    notifier.info("image.create", {"id": "1"})
    postcard = sys.modules["postcard_strategy"].PostcardStrategy
    assert postcard.sent == [("Mars", "image.create")]


@contextlib.contextmanager
def _distribution(folder: Path, module: str, source: str, entry_point: str) -> Iterator[None]:
    """A throwaway distribution of *module*, registering *entry_point* as a strategy."""
    (folder / f"{module}.py").write_text(source)
    dist_info = folder / f"{module}-1.0.dist-info"
    dist_info.mkdir()
    name = module.replace("_", "-")
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[instrument.strategies]\n{entry_point}\n")
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def test_an_installed_strategy_that_fails_to_import_is_a_config_error(tmp_path: Path) -> None:
    source, entry = "import a_module_that_is_not_there\n", "broken = broken_strategy:Broken"
    refused = pytest.raises(ConfigError, match=r"'strategy'.*broken_strategy.*ModuleNotFound")
    with _distribution(tmp_path, "broken_strategy", source, entry), refused:
        Notifier.from_config(strategy="broken")


def test_entry_point_that_is_not_a_strategy_is_refused(tmp_path: Path) -> None:
    source, entry = "Thing = object\n", "thing = not_a_strategy:Thing"
    refused = pytest.raises(ConfigError, match=r"'thing'.*Strategy subclass")
    with _distribution(tmp_path, "not_a_strategy", source, entry), refused:
        Notifier.from_config(strategy="thing")
