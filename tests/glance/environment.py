"""A real Glance API for the parity test: its own virtualenv, config folder and gunicorn.

The virtualenv holds pinned PyPI releases of Glance, python-glanceclient and gunicorn
and is cached under ``~/.cache`` (or ``$INSTRUMENT_GLANCE_VENV``) by a hash of the pins
and the Python version, so only the first run pays for the install. The kit is
installed into it from this checkout (editable, so the tree's ``instrument/`` is what
Glance's paste loader imports through ``egg:instrument#notifications``); a checkout at
another path re-points it with a quick ``--no-deps`` reinstall.

Glance 33 has no standalone server: gunicorn serves ``glance.wsgi.api:application``,
which reads ``glance-api.conf`` from ``$OS_GLANCE_CONFIG_DIR``. The configuration is
SQLite, the filesystem store (multi-store form), no Keystone (``[paste_deploy] flavor``
empty: the ``default`` pipeline with ``unauthenticated-context``) and Glance's own
notifications through oslo.messaging's ``log`` driver, routed by a logging config file
into a JSON-lines file of their own. Our filter is inserted into Glance's own
``glance-api-paste.ini`` right before ``rootapp`` with the logging strategy writing to
another file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]

#: Exact releases, verified to install together on Python 3.10-3.12.
PINS = ("glance==33.0.0", "python-glanceclient==4.13.0", "gunicorn==27.0.1")
#: Build tooling for the editable install of the kit (no build isolation needed then).
BUILD_PINS = ("setuptools==80.9.0", "wheel==0.45.1")

INSTALL_TIMEOUT = 900
#: Uploads above this fail inside Glance's store path (413 after image.prepare).
IMAGE_SIZE_CAP = 9 * 1024 * 1024


class EnvironmentUnavailable(RuntimeError):
    """The Glance virtualenv could not be built (typically: PyPI is unreachable)."""


def venv_path() -> Path:
    override = os.environ.get("INSTRUMENT_GLANCE_VENV")
    if override:
        return Path(override)
    key = "\n".join((*PINS, *BUILD_PINS, f"{sys.version_info[0]}.{sys.version_info[1]}"))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / f"instrument-glance-venv-{digest}"


def _run(command: list[str], *, timeout: float = INSTALL_TIMEOUT, **kwargs: Any) -> str:
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentUnavailable(f"{' '.join(command)} timed out after {timeout}s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise EnvironmentUnavailable(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")
    return done.stdout


def ensure_venv(log: Any = print) -> Path:
    """The cached virtualenv, built on first use; the kit in it points at this checkout."""
    venv = venv_path()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs never build the same venv at once
        complete = venv / ".instrument-complete"
        if not complete.exists():
            started = time.monotonic()
            log(f"glance: building {venv} ({', '.join(PINS)}) ...")
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)])
            pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
            _run([*pip, "install", "-q", *BUILD_PINS])
            _run([*pip, "install", "-q", *PINS])
            _install_kit(venv)
            complete.write_text("\n".join(PINS) + "\n")
            log(f"glance: built in {time.monotonic() - started:.0f}s")
        elif _kit_root(venv) != str(ROOT):
            _install_kit(venv)
    return venv


def _install_kit(venv: Path) -> None:
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    # The kit's own dependencies (wrapt, WebOb, PasteDeploy) come with Glance already.
    _run([*pip, "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(ROOT)])
    (venv / ".instrument-kit-root").write_text(str(ROOT))


def _kit_root(venv: Path) -> str | None:
    marker = venv / ".instrument-kit-root"
    return marker.read_text().strip() if marker.exists() else None


def glance_etc(venv: Path) -> Path:
    """The etc/glance folder Glance's wheel installs as data files."""
    found = venv / "etc" / "glance"
    if not (found / "glance-api-paste.ini").exists():
        raise EnvironmentUnavailable(f"no glance-api-paste.ini under {found}")
    return found


def insert_filter(paste_ini: str, filter_section: str) -> str:
    """Glance's paste.ini with ``notifications`` right before ``rootapp`` in ``default``."""
    pattern = re.compile(r"^(default\s*=.*?)\s+rootapp\s*$", re.MULTILINE)
    if not pattern.search(paste_ini):
        raise EnvironmentUnavailable("no 'default = ... rootapp' line in glance-api-paste.ini")
    edited = pattern.sub(r"\1 notifications rootapp", paste_ini, count=1)
    return edited.rstrip("\n") + "\n\n" + filter_section


def filter_section(log_file: Path) -> str:
    return textwrap.dedent(
        f"""\
        [filter:notifications]
        use = egg:instrument#notifications
        notifier_strategy = logging
        log_file = {log_file}
        """
    )


def glance_conf(work: Path, paste_ini: Path, logging_conf: Path) -> str:
    return textwrap.dedent(
        f"""\
        [DEFAULT]
        enabled_backends = fs:file
        log_config_append = {logging_conf}
        transport_url = fake:/
        worker_self_reference_url = http://127.0.0.1
        image_size_cap = {IMAGE_SIZE_CAP}

        [database]
        connection = sqlite:///{work / "glance.sqlite"}

        [glance_store]
        default_backend = fs

        [fs]
        filesystem_store_datadir = {work / "images"}

        [os_glance_staging_store]
        filesystem_store_datadir = {work / "staging"}

        [os_glance_tasks_store]
        filesystem_store_datadir = {work / "tasks"}

        [oslo_policy]
        enforce_new_defaults = false
        enforce_scope = false

        [paste_deploy]
        flavor =
        config_file = {paste_ini}

        [oslo_messaging_notifications]
        driver = log
        transport_url = fake:/
        """
    )


def logging_conf(native_log: Path, glance_log: Path) -> str:
    """Glance's own notifications (one JSON envelope per line) to *native_log*."""
    return textwrap.dedent(
        f"""\
        [loggers]
        keys = root, notifications

        [handlers]
        keys = glance, notifications

        [formatters]
        keys = plain, message

        [logger_root]
        level = WARNING
        handlers = glance

        [logger_notifications]
        qualname = oslo.messaging.notification
        level = DEBUG
        handlers = notifications
        propagate = 0

        [handler_glance]
        class = FileHandler
        args = ({str(glance_log)!r}, "a")
        formatter = plain

        [handler_notifications]
        class = FileHandler
        args = ({str(native_log)!r}, "a")
        formatter = message

        [formatter_plain]
        format = %(asctime)s %(levelname)s %(name)s %(message)s

        [formatter_message]
        format = %(message)s
        """
    )


@dataclass
class Glance:
    """A running Glance API and where its two notification streams land."""

    venv: Path
    work: Path
    port: int
    native_log: Path
    kit_log: Path
    glance_log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def glance(self, *args: str, timeout: float = 60) -> str:
        """Run the real ``glance`` CLI (image API v2) with standard input closed."""
        command = [str(self.venv / "bin" / "glance"), "--os-image-api-version", "2", *args]
        done = subprocess.run(
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            preexec_fn=close_stdin,  # glance image-create uploads a non-tty stdin
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return f"exit={done.returncode}\n{done.stdout}{done.stderr}"


def close_stdin() -> None:
    os.close(0)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip().startswith("{")]


@contextlib.contextmanager
def running_glance(venv: Path, work: Path) -> Iterator[Glance]:
    """Configure Glance in *work*, sync its database, serve it with gunicorn."""
    config = work / "etc"
    for folder in (config, work / "images", work / "staging", work / "tasks"):
        folder.mkdir(parents=True, exist_ok=True)
    native_log, kit_log = work / "glance-notifications.jsonl", work / "kit-notifications.jsonl"
    glance_log = work / "glance.log"
    etc = glance_etc(venv)
    paste_ini = config / "glance-api-paste.ini"
    paste_ini.write_text(
        insert_filter((etc / "glance-api-paste.ini").read_text(), filter_section(kit_log))
    )
    (config / "logging.conf").write_text(logging_conf(native_log, glance_log))
    (config / "glance-api.conf").write_text(glance_conf(work, paste_ini, config / "logging.conf"))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OS_", "INSTRUMENT_", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(
        OS_GLANCE_CONFIG_DIR=str(config),
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    )
    _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sys; from glance.cmd.manage import main; sys.exit(main())",
            "--config-file",
            str(config / "glance-api.conf"),
            "db_sync",
        ],
        env=env,
        timeout=120,
    )
    port = free_port()
    server_log = open(work / "gunicorn.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(venv / "bin" / "python"),
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "60",
            "--no-control-socket",
            "glance.wsgi.api:application",
        ],
        cwd=work,
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    client_env = {
        **env,
        "OS_IMAGE_URL": f"http://127.0.0.1:{port}",
        "OS_AUTH_TOKEN": "parity-test-token",
    }
    try:
        try:
            wait_for_port(port, timeout=60)
        except TimeoutError as exc:
            raise RuntimeError(
                f"gunicorn/Glance did not start:\n{(work / 'gunicorn.log').read_text()[-4000:]}"
            ) from exc
        yield Glance(venv, work, port, native_log, kit_log, glance_log, client_env)
    finally:
        stop_process(process)
        server_log.close()
