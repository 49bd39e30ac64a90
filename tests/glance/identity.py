"""A paste filter for the test's Glance: the identity headers ``authtoken`` would set.

It stands where ``keystonemiddleware.auth_token`` stands (before Glance's ``context``
filter) and sets ``X-Identity-Status: Confirmed`` with a fixed user, project and roles,
unless the request already carries an ``X-Project-Id`` (a test acting as another
project, e.g. an image member accepting a share). Never use this outside a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

PROJECT = "parity-project"
USER = "parity-user"
ROLES = "admin,member,reader"

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def filter_factory(global_conf: dict[str, Any], **local_conf: Any) -> Callable[[App], App]:
    def make(app: App) -> App:
        def identified(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            environ.setdefault("HTTP_X_PROJECT_ID", PROJECT)
            environ.setdefault("HTTP_X_USER_ID", USER)
            environ.setdefault("HTTP_X_ROLES", ROLES)
            environ["HTTP_X_IDENTITY_STATUS"] = "Confirmed"
            return app(environ, start_response)

        return identified

    return make
