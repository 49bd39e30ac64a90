"""Private, throw-away RabbitMQ nodes for the test suite (and for demos/benchmarks).

The suite tests the rabbit (AMQP 0-9-1, kombu) and qpid (AMQP 1.0, proton) strategies
against a real broker, Debian's ``rabbitmq-server`` 3.10.  This module starts as many
private nodes as a test needs, each fully isolated from the system's own broker and
from each other.  Decisions, and why:

* **Debian package, not a container or a download.**  Only PyPI and Debian apt are
  reachable here; ``rabbitmq-server`` (3.10.8 on Debian 12) ships the
  ``rabbitmq_amqp1_0`` plugin, which serves AMQP 1.0 on the *same* TCP port as
  AMQP 0-9-1 (it sniffs the protocol header).  :func:`ensure_installed` apt-installs
  it when missing and running as root.
* **No ``/usr/sbin/rabbitmq-server`` wrapper.**  Run as root, Debian's wrapper does
  ``su rabbitmq -c ...``; util-linux ``su -c`` calls ``setsid()`` (so the broker leaves
  our process group) and answers SIGTERM by SIGKILLing its child after 2 s (so a
  graceful stop is cut short).  We run ``/usr/lib/rabbitmq/bin/rabbitmq-server``
  directly with ``subprocess.Popen(user="rabbitmq", ...)`` in a new session: the
  node's whole process tree is one process group we can signal.
* **Everything under one temp base dir**, owned by the ``rabbitmq`` user: mnesia,
  logs, feature flags file, enabled-plugins file, ``rabbitmq.conf``, an empty
  ``rabbitmq-env.conf`` (so ``/etc/rabbitmq`` never leaks in), the Erlang cookie
  (``HOME`` points at the base dir, for the server and for ``rabbitmqctl``) and, with
  ``tls=True``, an openssl-made CA + server certificate.  :meth:`RabbitNode.stop`
  keeps the directory, so durable queues and persistent messages survive a
  stop/start; :meth:`RabbitNode.close` removes it.
* **Own ports, loopback only.**  AMQP, Erlang distribution and TLS ports are picked
  free by the kernel once per node and kept for its life (the node name
  ``inst-<amqp port>@localhost`` names its mnesia dir, so it must not change across a
  restart).  The default ports (5672, 25672) are never used, so a system broker
  left running is harmless; epmd (4369) is shared with it, bound to 127.0.0.1.
* **Readiness = a real AMQP handshake**, not a sleep and not ``rabbitmqctl
  await_startup`` (the CLI alone costs ~1 s): a raw AMQP 0-9-1 header must be answered
  with ``Connection.Start``, the AMQP 1.0 SASL header must be echoed on the same port
  (proving the plugin is loaded), the TLS port must complete a handshake against our
  CA, and a kombu connection must log in.
* **Nothing outlives the session.**  An ``atexit`` hook closes every node still
  running, and each node also runs a tiny watchdog shell inside its process group that
  TERMs the group once the Python process that started it is gone (covers SIGKILLed
  or timed-out test runs, where ``atexit`` never runs).

Usage::

    with RabbitNode() as node:           # start() on enter, close() on exit
        kombu.Connection(node.url)       # amqp://guest:guest@127.0.0.1:<port>//
        proton.utils.BlockingConnection(node.amqp1_url)

Command line (foreground node for demos and benchmarks, Ctrl-C stops it)::

    python -m tests.support.rabbitmq --port 5699 [--tls]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "TLS_SERVER_NAME",
    "RabbitError",
    "RabbitNode",
    "ensure_installed",
    "free_port",
    "make_certificates",
    "rabbitmq_available",
    "running_node",
]

SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
SYSTEM_WRAPPER = Path("/usr/sbin/rabbitmq-server")
RUN_AS = "rabbitmq"
HOST = "127.0.0.1"
TLS_SERVER_NAME = "localhost"  # in the server certificate's SAN next to IP:127.0.0.1
USER = "guest"
PASSWORD = "guest"
AMQP091_HEADER = b"AMQP\x00\x00\x09\x01"
AMQP10_SASL_HEADER = b"AMQP\x03\x01\x00\x00"

_open_nodes: set[RabbitNode] = set()  # created and not closed yet; closed at exit
_open_lock = threading.Lock()


class RabbitError(RuntimeError):
    """RabbitMQ could not be installed, started, stopped or administered."""


# --------------------------------------------------------------------------- install


def rabbitmq_available() -> bool:
    """Whether the Debian ``rabbitmq-server`` package (or an equivalent) is installed."""
    return SERVER_SCRIPT.exists() and CTL_SCRIPT.exists()


def ensure_installed(*, timeout: float = 900.0) -> None:
    """Install Debian's ``rabbitmq-server`` if it is missing.

    Needs root (apt).  Waits for a dpkg lock held by another apt run instead of
    failing.  The package's postinst may start the system broker on 5672; we stop it
    again (best effort) since it only costs memory and we never use its ports.
    """
    if rabbitmq_available():
        return
    if os.geteuid() != 0:
        raise RabbitError(
            "rabbitmq-server is not installed and we are not root: "
            "run `sudo apt-get install -y rabbitmq-server` (Debian/Ubuntu)"
        )
    if shutil.which("apt-get") is None:
        raise RabbitError("rabbitmq-server is not installed and apt-get is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    for cmd in (
        ["apt-get", *lock, "update"],
        ["apt-get", *lock, "install", "-y", "--no-install-recommends", "rabbitmq-server"],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RabbitError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{_tail(proc)}")
    _stop_system_service()
    if not rabbitmq_available():
        raise RabbitError(f"rabbitmq-server installed but {SERVER_SCRIPT} is missing")


def _stop_system_service() -> None:
    """Stop the broker Debian's postinst may have started (tolerates every failure)."""
    for cmd in (["service", "rabbitmq-server", "stop"], ["systemctl", "stop", "rabbitmq-server"]):
        if shutil.which(cmd[0]) is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(cmd, capture_output=True, timeout=60)
            return


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 20) -> str:
    text = (proc.stdout or "") + (proc.stderr or "")
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _distinct_free_port(taken: set[int]) -> int:
    while (port := free_port()) in taken:
        pass
    return port


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _exchange_header(port: int, header: bytes, expect: int, timeout: float = 2.0) -> bytes:
    """Send an AMQP protocol header and return the first ``expect`` bytes answered."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(header)
        data = b""
        while len(data) < expect:
            chunk = sock.recv(expect - len(data))
            if not chunk:
                break
            data += chunk
        return data


def _amqp091_ready(port: int) -> bool:
    """True once the broker answers the 0-9-1 header with a ``Connection.Start`` frame."""
    try:
        data = _exchange_header(port, AMQP091_HEADER, 11)
    except OSError:
        return False
    if len(data) < 11 or data[0] != 1:  # frame type 1 = method frame
        return False
    class_id, method_id = struct.unpack(">HH", data[7:11])
    return (class_id, method_id) == (10, 10)  # connection.start


def _amqp10_served(port: int) -> bool:
    """True when the same port speaks AMQP 1.0 (the broker echoes the SASL header)."""
    try:
        return _exchange_header(port, AMQP10_SASL_HEADER, 8) == AMQP10_SASL_HEADER
    except OSError:
        return False


def _tls_ready(port: int, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection((HOST, port), timeout=2.0) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            return tls.version() is not None
    except (OSError, ssl.SSLError):
        return False


def _kombu_login(url: str) -> None:
    """Log in once with kombu (proves users and the default vhost exist)."""
    try:
        from kombu.connection import Connection
    except ImportError:  # kombu is optional for the harness; the raw handshake suffices
        return
    with Connection(url, connect_timeout=5) as conn:
        conn.ensure_connection(max_retries=1)


# --------------------------------------------------------------------------- TLS


def make_certificates(directory: Path, *, days: int = 3650) -> tuple[Path, Path, Path]:
    """Write a self-signed CA and a server cert/key for 127.0.0.1 and localhost.

    Returns ``(ca_file, cert_file, key_file)``.  The extensions (CA key usage,
    subject/authority key ids, serverAuth) satisfy OpenSSL 3's and Python 3.13's
    strict X.509 checks, not only the lenient defaults.
    """
    if shutil.which("openssl") is None:
        raise RabbitError("openssl is needed for tls=True (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    steps: list[list[str]] = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days),
         "-subj", "/CN=instrument test CA", "-keyout", str(ca_key), "-out", str(ca),
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(csr)],
        ["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-set_serial", str(secrets.randbits(63)), "-days", str(days),
         "-extfile", str(ext), "-out", str(cert)],
    ]  # fmt: skip
    for args in steps:
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RabbitError(f"openssl {args[0]} failed:\n{_tail(proc)}")
    return ca, cert, key


# --------------------------------------------------------------------------- node


class RabbitNode:
    """One private RabbitMQ node on 127.0.0.1 with its own ports and data directory.

    The ports and the base directory are chosen at construction and kept until
    :meth:`close`, so ``stop()``/``start()``/``restart()``/``kill()`` keep the data
    (durable queues, persistent messages) and the URLs.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        tls: bool = False,
        tls_port: int | None = None,
        dist_port: int | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        extra_config: Sequence[str] = (),
        cookie: str | None = None,
    ) -> None:
        taken: set[int] = set()
        self.port = port or _distinct_free_port(taken)
        taken.add(self.port)
        self.dist_port = dist_port or _distinct_free_port(taken)
        taken.add(self.dist_port)
        self.tls = tls
        self.tls_port: int | None = (tls_port or _distinct_free_port(taken)) if tls else None
        self.nodename = f"inst-{self.port}@localhost"
        self.keep_data = base_dir is not None  # close() deletes only dirs we created
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix=f"rabbit-{self.port}-"))
        self.ca_file: Path | None = None  # CA that signed the TLS listener's certificate
        self.cert_file: Path | None = None
        self.key_file: Path | None = None
        self._extra_config = list(extra_config)
        self.cookie = cookie or secrets.token_hex(16).upper()  # a cluster's nodes share one
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self.last_start_seconds: float | None = None
        with _open_lock:
            _open_nodes.add(self)

    # ----------------------------------------------------------------- URLs

    @property
    def url(self) -> str:
        """kombu URL of the default vhost with the guest user."""
        return f"amqp://{USER}:{PASSWORD}@{HOST}:{self.port}//"

    @property
    def amqp1_url(self) -> str:
        """proton URL (AMQP 1.0, same port; SASL ANONYMOUS maps to user guest)."""
        return f"amqp://{HOST}:{self.port}"

    @property
    def tls_url(self) -> str:
        """kombu URL over TLS; pass ``ssl={"ca_certs": node.ca_file, ...}`` too."""
        return f"amqps://{USER}:{PASSWORD}@{HOST}:{self._need_tls()}//"

    @property
    def amqp1_tls_url(self) -> str:
        """proton URL over TLS; use an ``SSLDomain`` trusting :attr:`ca_file`.

        proton's ``VERIFY_PEER_NAME`` checks DNS names only, never IP SANs, and fails
        with ``certificate verify failed`` against ``127.0.0.1``: connect with
        ``virtual_host=TLS_SERVER_NAME`` (it sets SNI and the name checked; RabbitMQ
        still uses the default vhost) or use ``VERIFY_PEER``.
        """
        return f"amqps://{HOST}:{self._need_tls()}"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "log" / f"{self.nodename}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    def _need_tls(self) -> int:
        if self.tls_port is None:
            raise RabbitError("this node was created without tls=True")
        return self.tls_port

    # ----------------------------------------------------------------- setup

    def _prepare(self) -> None:
        """Create the base dir layout once (config, plugins, cookie, certs)."""
        if self._prepared:
            return
        base = self.base_dir
        for sub in ("mnesia", "log", "conf.d"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "enabled_plugins").write_text("[rabbitmq_amqp1_0].\n")
        (base / "rabbitmq-env.conf").write_text("")
        cookie = base / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        if self.tls:
            self.ca_file, self.cert_file, self.key_file = make_certificates(base / "tls")
        (base / "rabbitmq.conf").write_text(self._config_text())
        self._chown_tree()
        self._prepared = True

    def _config_text(self) -> str:
        lines = [
            f"default_user = {USER}",
            f"default_pass = {PASSWORD}",
            "loopback_users = none",
            "amqp1_0.default_user = guest",
            "disk_free_limit.absolute = 10MB",
            "log.file.level = info",
            "log.console = false",
        ]
        if self.tls:
            lines += [
                f"listeners.ssl.default = {HOST}:{self.tls_port}",
                f"ssl_options.cacertfile = {self.ca_file}",
                f"ssl_options.certfile = {self.cert_file}",
                f"ssl_options.keyfile = {self.key_file}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        return "\n".join([*lines, *self._extra_config, ""])

    def _chown_tree(self) -> None:
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(RUN_AS)
        for root, dirs, files in os.walk(self.base_dir):
            for name in (root, *(os.path.join(root, n) for n in dirs + files)):
                os.chown(name, user.pw_uid, user.pw_gid)

    def _env(self) -> dict[str, str]:
        base = self.base_dir
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {
            **keep,
            "HOME": str(base),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "feature_flags"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONFIG_FILES": str(base / "conf.d"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": HOST,
            # No scheduler busy-waiting (RabbitMQ's advice for shared hosts): a node
            # that spins after each batch takes one of this machine's two cores from
            # the processes under test, and every latency measured beside it.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-kernel inet_dist_use_interface {127,0,0,1} "
                "+sbwt none +sbwtdcpu none +sbwtdio none"
            ),
        }

    @staticmethod
    def _run_as() -> str | None:
        """The user the node runs as: ``rabbitmq`` when we are root, else ourselves."""
        return RUN_AS if os.geteuid() == 0 else None

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 60.0) -> RabbitNode:
        """Start the node and return once AMQP (0-9-1, 1.0 and TLS) logins work."""
        if self.running:
            return self
        if not rabbitmq_available():
            raise RabbitError(f"{SERVER_SCRIPT} not found: call ensure_installed() first")
        self._prepare()
        for port in (self.port, self.dist_port, self.tls_port):
            if port is not None and _port_open(port):
                raise RabbitError(f"port {port} on {HOST} is already in use")
        started = time.monotonic()
        out = open(self.base_dir / "log" / "startup.log", "ab")  # noqa: SIM115 - owned by Popen
        # The watchdog lives in the node's process group and TERMs the group once the
        # Python process that started it is gone; then the shell execs the server.
        watchdog = (
            f"( while [ -d /proc/{os.getpid()} ]; do sleep 1; done; kill -TERM 0 ) "
            f"</dev/null >/dev/null 2>&1 & exec {SERVER_SCRIPT}"
        )
        try:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", watchdog],
                cwd=self.base_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self._run_as(),
                group=self._run_as(),
                extra_groups=[] if self._run_as() else None,
            )
        finally:
            out.close()
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.kill()
            raise
        self.last_start_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        checks = [("AMQP 0-9-1", lambda: _amqp091_ready(self.port))]
        checks.append(("AMQP 1.0 on the same port", lambda: _amqp10_served(self.port)))
        if self.tls_port is not None and self.ca_file is not None:
            port, ca = self.tls_port, self.ca_file
            checks.append(("TLS handshake", lambda: _tls_ready(port, ca)))
        for what, check in checks:
            while not check():
                if self._proc is None or self._proc.poll() is not None:
                    code = self._proc.returncode if self._proc else None
                    raise RabbitError(f"{self.nodename} exited ({code}):\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RabbitError(f"{self.nodename}: no {what} in time:\n{self.log_tail()}")
                time.sleep(0.1)
        _kombu_login(self.url)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM to the process group, SIGKILL after ``timeout``)."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Crash the node (SIGKILL to its whole process group); the data dir stays."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self, timeout: float = 60.0) -> RabbitNode:
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the node and delete its base directory (unless :attr:`keep_data`)."""
        self.stop()
        if not self.keep_data:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        with _open_lock:
            _open_nodes.discard(self)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # The shell has gone; make sure no straggler of the group (beam) holds on.
        deadline = time.monotonic() + timeout
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        while any(_port_open(p) for p in (self.port, self.tls_port) if p is not None):
            if time.monotonic() > deadline:
                raise RabbitError(f"{self.nodename}: port still open after stop")
            time.sleep(0.05)
        self._proc = None

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RabbitNode {self.nodename} port={self.port} tls_port={self.tls_port} {state}>"

    # ----------------------------------------------------------------- admin

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <node> ARGS`` as the node's user; return its stdout."""
        proc = subprocess.run(
            [str(CTL_SCRIPT), "-n", self.nodename, *args],
            cwd=self.base_dir,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self._run_as(),
            group=self._run_as(),
            extra_groups=[] if self._run_as() else None,
        )
        if proc.returncode != 0:
            raise RabbitError(f"rabbitmqctl {' '.join(args)} failed:\n{_tail(proc)}")
        return proc.stdout

    def add_user(self, name: str, password: str, *, vhost: str | None = "/") -> None:
        """Create a user with full permissions on ``vhost`` (none if ``vhost`` is None)."""
        self.ctl("add_user", name, password)
        if vhost is not None:
            self.ctl("set_permissions", "-p", vhost, name, ".*", ".*", ".*")

    def add_vhost(self, name: str, *, grant: str | None = USER) -> None:
        """Create a vhost and give ``grant`` (default guest) full permissions on it."""
        self.ctl("add_vhost", name)
        if grant is not None:
            self.ctl("set_permissions", "-p", name, grant, ".*", ".*", ".*")

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the node's log and of its stdout/stderr, for error messages."""
        parts = []
        for path in (self.log_file, self.base_dir / "log" / "startup.log"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts) or "(no log written)"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@atexit.register
def _stop_all() -> None:
    """Close every node this process created and did not close (at interpreter exit)."""
    with _open_lock:
        nodes = list(_open_nodes)
    for node in nodes:
        with contextlib.suppress(Exception):
            node.close()


@contextlib.contextmanager
def running_node(**kwargs: object) -> Iterator[RabbitNode]:
    """``ensure_installed()`` then a started node, closed on exit."""
    ensure_installed()
    node = RabbitNode(**kwargs)  # type: ignore[arg-type]
    try:
        yield node.start()
    finally:
        node.close()


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.rabbitmq",
        description="Run a private RabbitMQ node in the foreground (Ctrl-C stops it).",
    )
    parser.add_argument("--port", type=int, default=None, help="AMQP port (default: free)")
    parser.add_argument("--tls", action="store_true", help="also serve AMQP over TLS")
    parser.add_argument("--tls-port", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the data dir on exit")
    args = parser.parse_args(argv)
    ensure_installed()
    node = RabbitNode(port=args.port, tls=args.tls, tls_port=args.tls_port)
    node.keep_data = args.keep
    # A SIGTERM (e.g. `timeout`) must stop the node too, not only Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        node.start()
        print(f"node      {node.nodename} (started in {node.last_start_seconds:.1f} s)")
        print(f"amqp      {node.url}")
        print(f"amqp 1.0  {node.amqp1_url}")
        if node.tls:
            print(f"amqps     {node.tls_url}")
            print(f"amqps 1.0 {node.amqp1_tls_url}")
            print(f"ca file   {node.ca_file}")
        print(f"data      {node.base_dir}{' (kept)' if node.keep_data else ''}")
        print(f"log       {node.log_file}", flush=True)
        while node.running:
            time.sleep(0.5)
        print("node exited by itself:\n" + node.log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        node.close()


if __name__ == "__main__":
    raise SystemExit(main())
