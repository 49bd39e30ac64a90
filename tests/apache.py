"""Apache with Debian's mod_wsgi for the server matrix: a generated config, as www-data.

``mod_wsgi-express`` cannot run here: as root it refuses (``AH00526``), and its
workers, as ``nobody``, cannot read the Python under ``/root/.pyenv`` (mode 0700).
Debian's ``libapache2-mod-wsgi-py3`` embeds the system Python (``/usr/bin/python3``,
readable by everyone), so the application runs from a world-readable copy: the kit
and the test modules copied into the server's work directory, and the kit's core
dependencies in :data:`SITE` (``pip install --target``, by ``scripts/install``).
Apache starts in the foreground as root, listens on 127.0.0.1, and serves from one
mod_wsgi daemon process (4 threads) running as www-data.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = Path("/usr/lib/apache2/modules")
APACHE = Path("/usr/sbin/apache2")
#: The core dependencies, for the system Python (scripts/install puts them there).
SITE = Path(os.environ.get("INSTRUMENT_MOD_WSGI_SITE", "/opt/instrument-mod-wsgi/site-packages"))
#: The test modules the application needs, besides the kit.
TEST_MODULES = ("__init__.py", "apache.py", "servers.py", "test_sending_servers.py")

CONF = """\
ServerRoot {apache}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {apache}/httpd.pid
ErrorLog {apache}/error.log
LogLevel warn
Mutex file:{apache}
DefaultRuntimeDir {apache}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule wsgi_module {modules}/mod_wsgi.so
User www-data
Group www-data
StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 16
WSGISocketPrefix {apache}/wsgi
WSGIDaemonProcess matrix processes=1 threads=4 python-path={code}:{site}
WSGIProcessGroup matrix
WSGIApplicationGroup %{{GLOBAL}}
WSGIScriptAlias / {script}
<Directory {workdir}>
    Require all granted
</Directory>
"""

SCRIPT = """\
import os
os.environ.update({env!r})
from tests.test_sending_servers import server_app as application
"""


def unavailable() -> str | None:
    """Why Apache with Debian's mod_wsgi cannot run here, or None."""
    if os.getuid() != 0:
        return "Apache must start as root to serve as www-data"
    for needed in (APACHE, MODULES / "mod_wsgi.so"):
        if not needed.exists():
            return (
                f"{needed} is missing (scripts/install installs apache2, libapache2-mod-wsgi-py3)"
            )
    if not (SITE / "wrapt").is_dir():
        return f"the kit's dependencies for the system Python are not in {SITE} (scripts/install)"
    return None


def command(workdir: Path, port: int, env: dict[str, str]) -> list[str]:
    """Write the config, the WSGI script and the copy of the code; Apache's command."""
    code, apache = workdir / "code", workdir / "apache"
    shutil.copytree(
        ROOT / "instrument", code / "instrument", ignore=shutil.ignore_patterns("__pycache__")
    )
    (code / "tests").mkdir()
    for name in TEST_MODULES:
        shutil.copy(ROOT / "tests" / name, code / "tests" / name)
    apache.mkdir()
    apache.chmod(0o777)
    script = workdir / "app.wsgi"
    script.write_text(SCRIPT.format(env=env))
    conf = apache / "httpd.conf"
    conf.write_text(
        CONF.format(
            apache=apache,
            port=port,
            modules=MODULES,
            code=code,
            site=SITE,
            script=script,
            workdir=workdir,
        )
    )
    return [str(APACHE), "-f", str(conf), "-DFOREGROUND"]
