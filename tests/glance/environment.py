"""A real Glance API for the parity test: its own virtualenv, config folder and gunicorn.

The virtualenv holds pinned PyPI releases of Glance, python-glanceclient and gunicorn
and is cached under ``~/.cache`` (or ``$INSTRUMENT_GLANCE_VENV``) by a hash of the pins
and the Python version, so only the first run pays for the install. The kit is
installed into it once (editable, ``--no-deps``) so that it has the kit's metadata; each
run then puts *this* checkout first on ``PYTHONPATH`` with a ``dist-info`` of its own
(:func:`kit_overlay`), so Glance's paste loader imports this tree's ``instrument/``
through ``egg:instrument#notifications`` even while other checkouts share the venv.

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import free_port, stop_process, wait_for_port

from .configs import STORE_FOLDERS, Setup, glance_conf, logging_conf, paste_config

ROOT = Path(__file__).resolve().parents[2]

#: Exact releases, verified to install together on Python 3.10-3.12.
PINS = ("glance==33.0.0", "python-glanceclient==4.13.0", "gunicorn==27.0.1")
#: Build tooling for the editable install of the kit (no build isolation needed then).
BUILD_PINS = ("setuptools==80.9.0", "wheel==0.45.1")

INSTALL_TIMEOUT = 900


class EnvironmentUnavailable(RuntimeError):
    """The Glance virtualenv could not be built (typically: PyPI is unreachable)."""


def venv_path(name: str = "glance", pins: tuple[str, ...] = PINS) -> Path:
    """Where the virtualenv of *pins* is cached (``$INSTRUMENT_GLANCE_VENV`` for Glance's)."""
    override = os.environ.get("INSTRUMENT_GLANCE_VENV")
    if override and name == "glance":
        return Path(override)
    key = "\n".join((*pins, *BUILD_PINS, f"{sys.version_info[0]}.{sys.version_info[1]}"))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / f"instrument-{name}-venv-{digest}"


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
    """The cached Glance virtualenv, built on first use; the kit in it has metadata."""
    return cached_venv("glance", PINS, finish=_install_kit, log=log)


def cached_venv(
    name: str,
    pins: tuple[str, ...],
    *,
    finish: Callable[[Path], None] | None = None,
    log: Any = print,
) -> Path:
    """The virtualenv of *pins*, built once (under a file lock) and cached by their hash."""
    venv = venv_path(name, pins)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs never build the same venv at once
        complete = venv / ".instrument-complete"
        if not complete.exists():
            started = time.monotonic()
            log(f"{name}: building {venv} ({', '.join(pins)}) ...")
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)])
            pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
            _run([*pip, "install", "-q", *BUILD_PINS])
            _run([*pip, "install", "-q", *pins])
            if finish is not None:
                finish(venv)
            complete.write_text("\n".join(pins) + "\n")
            log(f"{name}: built in {time.monotonic() - started:.0f}s")
    return venv


def _install_kit(venv: Path) -> None:
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    # The kit's own dependencies (wrapt, WebOb, PasteDeploy) come with Glance already.
    _run([*pip, "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(ROOT)])
    (venv / ".instrument-kit-root").write_text(str(ROOT))


def kit_overlay(work: Path, site_hook: str = "") -> str:
    """A ``PYTHONPATH`` that makes this checkout the kit Glance imports.

    The checkout itself (the ``instrument`` package) and a folder holding a
    ``dist-info`` with the checkout's entry points (the paste filter, the strategies):
    both come before the venv's site-packages, whichever checkout the venv was built
    from, and nothing shared is changed.
    """
    text = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    assert version, "no version in pyproject.toml"
    lines = []  # the entry-point tables, as entry_points.txt spells them (no tomllib on 3.10)
    for table in re.finditer(r"^\[project\.entry-points\.(\S+)\]\n((?:[^\[\n].*\n)*)", text, re.M):
        lines.append(f"[{table[1].strip(chr(34))}]")
        lines += [entry.replace('"', "") for entry in table[2].splitlines() if "=" in entry]
    info = work / "kit-overlay" / f"instrument-{version[1]}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: instrument\nVersion: {version[1]}\n"
    )
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    if site_hook:
        (info.parent / "sitecustomize.py").write_text(site_hook)
    return os.pathsep.join((str(ROOT), str(info.parent)))


def glance_etc(venv: Path) -> Path:
    """The etc/glance folder Glance's wheel installs as data files."""
    found = venv / "etc" / "glance"
    if not (found / "glance-api-paste.ini").exists():
        raise EnvironmentUnavailable(f"no glance-api-paste.ini under {found}")
    return found


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
    pid: int = 0  # gunicorn's master (its worker is its child)

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
def running_glance(venv: Path, work: Path, setup: Setup | None = None) -> Iterator[Glance]:
    """Configure Glance in *work* (see :class:`Setup`), sync its database, serve it."""
    setup = setup or Setup()
    config = work / "etc"
    for folder in (config, *(work / name for name in STORE_FOLDERS)):
        folder.mkdir(parents=True, exist_ok=True)
    native_log, kit_log = work / "glance-notifications.jsonl", work / "kit-notifications.jsonl"
    glance_log = work / "glance.log"
    etc = glance_etc(venv)
    paste_ini = config / "glance-api-paste.ini"
    paste_ini.write_text(paste_config((etc / "glance-api-paste.ini").read_text(), setup, kit_log))
    (config / "logging.conf").write_text(logging_conf(native_log, glance_log))
    (config / "glance-api.conf").write_text(
        glance_conf(work, paste_ini, config / "logging.conf", setup)
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OS_", "INSTRUMENT_", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(
        OS_GLANCE_CONFIG_DIR=str(config),
        PYTHONPATH=kit_overlay(work, setup.site_hook),
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
        "OS_AUTH_TOKEN": setup.token,
    }
    try:
        try:
            wait_for_port(port, timeout=60)
        except TimeoutError as exc:
            raise RuntimeError(
                f"gunicorn/Glance did not start:\n{(work / 'gunicorn.log').read_text()[-4000:]}"
            ) from exc
        yield Glance(venv, work, port, native_log, kit_log, glance_log, client_env, process.pid)
    finally:
        stop_process(process)
        server_log.close()
