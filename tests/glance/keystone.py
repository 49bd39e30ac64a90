"""A real Keystone for the ``keystone`` flavour: its own cached virtualenv, SQLite, gunicorn.

The virtualenv (PyPI ``keystone`` and gunicorn, pinned) is built once and cached beside
Glance's (:func:`ensure_keystone_venv`), not installed into Glance's: the two releases'
dependencies are then never resolved against each other. Each run bootstraps a fresh
Keystone in its work folder (``keystone-manage db_sync``, ``fernet_setup``,
``credential_setup``, ``bootstrap`` with an ``admin`` user and project) and serves
``keystone.wsgi.api:application`` with gunicorn on a free port of 127.0.0.1.

Keystone parses ``sys.argv`` with oslo.config when its application is built, so gunicorn
gets no arguments: everything is in a ``gunicorn.conf.py`` in its working folder.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import subprocess
import textwrap
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port, stop_process, wait_for_port

from .environment import cached_venv

#: Exact releases (Keystone 30 is the release of Glance 33's cycle).
KEYSTONE_PINS = ("keystone==30.0.0", "gunicorn==27.0.1")
ADMIN_PASSWORD = "parity-admin-secret"


def ensure_keystone_venv() -> Path:
    return cached_venv("keystone", KEYSTONE_PINS)


@dataclass(frozen=True)
class Token:
    """A scoped token and whose it is, as Keystone says."""

    id: str
    project_id: str
    user_id: str


@dataclass(frozen=True)
class Keystone:
    url: str

    def token(self, user: str = "admin", password: str = ADMIN_PASSWORD) -> Token:
        """A project-scoped token (POST /v3/auth/tokens), with its project and user ids."""
        identity = {"user": {"name": user, "domain": {"id": "default"}, "password": password}}
        body = {
            "auth": {
                "identity": {"methods": ["password"], "password": identity},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
        request = urllib.request.Request(
            f"{self.url}/v3/auth/tokens",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            token = json.load(answer)["token"]
            subject = answer.headers["X-Subject-Token"]
        return Token(subject, token["project"]["id"], token["user"]["id"])

    def authtoken_conf(self) -> str:
        """glance-api.conf's ``[keystone_authtoken]``: Glance validates tokens as admin."""
        return textwrap.dedent(
            f"""
            [keystone_authtoken]
            www_authenticate_uri = {self.url}/v3
            auth_url = {self.url}/v3
            auth_type = password
            project_domain_id = default
            user_domain_id = default
            project_name = admin
            username = admin
            password = {ADMIN_PASSWORD}
            """
        )


@contextlib.contextmanager
def running_keystone(venv: Path, work: Path) -> Iterator[Keystone]:
    """Bootstrap a Keystone in *work* and serve it until the block ends."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    conf = _configure(work)
    manage = [str(venv / "bin" / "keystone-manage"), "--config-file", str(conf)]
    # The key repositories belong to whoever runs the test (root only when root runs it).
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    owner = ["--keystone-user", user, "--keystone-group", group]
    endpoints = [f"--bootstrap-{kind}-url={url}/v3" for kind in ("admin", "public", "internal")]
    for command in (
        ["db_sync"],
        ["fernet_setup", *owner],
        ["credential_setup", *owner],
        ["bootstrap", f"--bootstrap-password={ADMIN_PASSWORD}", *endpoints],
    ):
        subprocess.run([*manage, *command], capture_output=True, check=True, timeout=120)
    (work / "gunicorn.conf.py").write_text(
        f'wsgi_app = "keystone.wsgi.api:application"\nbind = "127.0.0.1:{port}"\n'
        "workers = 1\ncontrol_socket_disable = True\n"
    )
    log = open(work / "keystone-gunicorn.log", "w")  # noqa: SIM115 - closed below
    env = {**os.environ, "OS_KEYSTONE_CONFIG_DIR": str(conf.parent)}
    process = subprocess.Popen(
        [str(venv / "bin" / "python"), "-m", "gunicorn"],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=60)
        yield Keystone(url)
    finally:
        stop_process(process)
        log.close()


def _configure(work: Path) -> Path:
    folders = {name: work / name for name in ("etc", "fernet", "credential")}
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    conf = folders["etc"] / "keystone.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            [database]
            connection = sqlite:///{work / "keystone.sqlite"}

            [token]
            provider = fernet

            [fernet_tokens]
            key_repository = {folders["fernet"]}

            [fernet_receipts]
            key_repository = {folders["fernet"]}

            [credential]
            key_repository = {folders["credential"]}
            """
        )
    )
    return conf
