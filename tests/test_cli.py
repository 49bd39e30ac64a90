"""The `instrument` command: the demo (the README's first command), check and listen."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from instrument.cli import main
from instrument.cli.check import filter_options
from instrument.cli.display import Printer

from .lifecycle import LIFECYCLE_EVENTS

ROOT = Path(__file__).resolve().parent.parent


def test_readme_demo_command_runs_the_whole_lifecycle() -> None:
    """`make demo` runs scripts/demo: install, then `instrument demo`."""
    result = subprocess.run(
        ["bash", "scripts/demo", "--json", "--size", "24"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    notes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(n["event_type"], n["priority"]) for n in notes] == LIFECYCLE_EVENTS
    full, ranged, aborted = (
        n["payload"]["bytes_sent"] for n in notes if n["event_type"] == "image.send"
    )
    assert full == 24 * 1024 * 1024 and ranged == 1024 * 1024 and 0 <= aborted < full
    assert "9 notifications delivered" in result.stderr
    # The aborted download: what the client read next to bytes_sent, within its buffer.
    said = re.search(
        r"the client read ([\d,]+) bytes of the body; image.send says bytes_sent=([\d,]+): "
        r"[-+\d,]+, within its ([\d,]+)-byte receive buffer",
        result.stderr,
    )
    assert said is not None, result.stderr
    read, sent, buffer = (int(group.replace(",", "")) for group in said.groups())
    assert sent == aborted and read <= sent <= read + buffer


def test_demo_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--size", "20"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["time", "(UTC)", "priority", "event_type"]
    assert "ERROR    image.send" in out and "INFO     image.activate" in out


def test_check_reports_success_for_a_working_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-o", "strategy=logging"]) == 0
    assert capsys.readouterr().out.startswith("OK: test notification")


def test_check_reads_the_filter_section_of_a_paste_ini(tmp_path: Path) -> None:
    ini = tmp_path / "api-paste.ini"
    ini.write_text(
        "[DEFAULT]\nunrelated = 1\n\n[filter:context]\npaste.filter_factory = x:y\n\n"
        "[filter:notify]\nuse = egg:instrument#notifications\n"
        "notifier_strategy = memory\nmemory_max = 5\n"
    )
    assert filter_options(str(ini)) == {"notifier_strategy": "memory", "memory_max": "5"}
    assert main(["check", "--paste-ini", str(ini)]) == 0


def test_check_config_error_exits_2_with_the_option_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "-o", "notifier_strategy=smoke-signals"]) == 2
    assert "invalid value 'smoke-signals' for option 'strategy'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option", ["seen_images=-1", "routes=garbage", "import_timeout=nan", "image_lookup=maybe"]
)
def test_check_refuses_the_filter_options_the_filter_refuses(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-o", "strategy=logging", "-o", option]) == 2
    assert option.partition("=")[0] in capsys.readouterr().err


def test_check_without_our_filter_in_the_paste_ini(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ini = tmp_path / "api-paste.ini"
    ini.write_text("[filter:context]\npaste.filter_factory = x:y\n")
    assert main(["check", "--paste-ini", str(ini)]) == 2
    assert (
        "one filter section that uses instrument (found: filter:context)" in capsys.readouterr().err
    )


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "instrument.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "demo" in result.stdout and "listen" in result.stdout


def test_check_reads_the_paste_ini_as_paste_does(tmp_path: Path) -> None:
    ini = tmp_path / "api-paste.ini"
    ini.write_text(
        "[DEFAULT]\nlogs = /var/log/glance\n\n[filter:notify]\nuse = egg:instrument#notifications\n"
        "notifier_strategy = logging\nlog_file = %(here)s/notifications.log\n"
        "publisher_id = %(logs)s\n"
    )
    assert filter_options(str(ini)) == {
        "notifier_strategy": "logging",
        "log_file": f"{tmp_path}/notifications.log",
        "publisher_id": "/var/log/glance",
    }


def test_check_paste_ini_that_paste_cannot_load_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ini = tmp_path / "api-paste.ini"
    ini.write_text(
        "[filter:notify]\nuse = egg:instrument#notifications\nlog_file = %(nowhere)s/x.log\n"
    )
    assert main(["check", "--paste-ini", str(ini)]) == 2
    assert "a section Paste can load" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["1", "0", "-5", "big"])
def test_demo_refuses_an_image_too_small_to_abort(
    size: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--size", size])
    assert "--size" in capsys.readouterr().err


def test_demo_through_a_broker_needs_a_url_and_says_so_at_once() -> None:
    with pytest.raises(SystemExit, match="--strategy rabbit needs --url"):
        main(["demo", "--strategy", "rabbit"])


SECRET = "Xy7-Secret"


@pytest.mark.parametrize(
    "ini",
    [
        f"rabbit_password = {SECRET}\n[filter:notify]\nuse = egg:instrument#notifications\n",
        "[filter:notify]\nuse = egg:instrument#notifications\n"
        f"rabbit_password = {SECRET}\nrabbit_password = {SECRET}\n",
        f"[filter:notify]\nuse = egg:instrument#notifications\nrabbit_password = a%{SECRET}\n",
    ],
    ids=["before any section", "an option twice", "a bare %"],
)
def test_a_paste_ini_that_cannot_be_read_is_one_line_without_its_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ini: str
) -> None:
    """configparser quotes the offending line, which may hold a password."""
    path = tmp_path / "api-paste.ini"
    path.write_text(ini)
    assert main(["check", "--paste-ini", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error:") and err.count("\n") == 1
    assert SECRET not in err


@pytest.mark.parametrize(
    "url",
    ["amqp://u:p@127.0.0.1:1//;amqp://u:p@127.0.0.1:2//", "amqp://", "localhost", "memory://"],
)
def test_listen_takes_the_urls_kombu_takes(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A failover list, a URL without a host or a scheme (kombu: localhost), a local
    transport: none is refused as a bad --url (a broker that is not there is another
    matter)."""
    main(["listen", "--url", url, "--timeout", "1"])
    assert "for option '--url'" not in capsys.readouterr().err


def test_listen_names_a_bad_url_masked_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unencoded "/" in a password reads as the end of the host: the client library's
    own error quoted part of the password."""
    url = f"amqp://glance:{SECRET}/x@127.0.0.1:5672/"
    for extra in ([], ["--amqp1"]):
        assert main(["listen", "--url", url, "--timeout", "3", *extra]) == 2
        err = capsys.readouterr().err
        assert "--url" in err and SECRET not in err


def test_demo_with_a_bad_url_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"amqp://glance:{SECRET}/x@127.0.0.1:5672/"
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--strategy", "rabbit", "--url", url, "--size", "8"])
    message = str(exited.value.code)
    assert message.startswith("instrument demo:") and SECRET not in message


def test_the_table_escapes_what_would_drive_the_terminal() -> None:
    out = io.StringIO()
    name = "x\u202e\x1b[31mred\n12:00 INFO image.delete forged\u2028"
    payload = {"id": "i-1", "name": name}
    Printer(out).show({"event_type": "image.update", "priority": "INFO", "payload": payload})
    shown = out.getvalue()
    assert "\x1b" not in shown and "\u202e" not in shown and "\\x1b[31mred" in shown
    assert shown.count("\n") == 1 and "\u2028" not in shown  # no forged second row
    out = io.StringIO()
    Printer(out, as_json=True).show({"event_type": "image.x", "payload": {"b": memoryview(b"ab")}})
    assert json.loads(out.getvalue())["payload"] == {"b": "ab"}


def test_check_called_in_process_gets_its_whole_timeout() -> None:
    """The process's age is the console script's start-up, not an in-process caller's:
    a long-lived process got the smallest share (0.5 s) whatever --timeout said."""
    from instrument.cli import check

    seen: list[float] = []
    real = check.run_check

    def spy(*args: Any, **kwargs: Any) -> int:
        seen.append(kwargs["spent"])
        return real(*args, **kwargs)

    check.run_check = spy  # type: ignore[assignment]
    try:
        assert main(["check", "-o", "strategy=logging", "--timeout", "10"]) == 0
    finally:
        check.run_check = real  # type: ignore[assignment]
    assert seen and 0 <= seen[0] < 5
