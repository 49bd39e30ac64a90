"""The example image API instrumented with decorators instead of the middleware.

:func:`decorated_image_api` returns an :class:`~examples.image_api.app.ImageAPI` whose
handlers emit the same notifications as ``NotificationMiddleware(ImageAPI(), notifier)``
(``tests/test_decorators_parity.py`` checks it)::

    from examples.image_api.decorated import decorated_image_api

    app = decorated_image_api(Notifier.from_config(notifier_strategy="logging"))

The handler methods are decorated in one line by
:func:`~instrument.decorators.instrument_class`. Each call makes a new subclass, so
that several apps in one process can use different notifiers.
"""

from __future__ import annotations

import os
from typing import Any, Final, cast

from instrument import Notifier
from instrument.decorators import instrument_class

from .app import ImageAPI

__all__ = ["STEPS", "DecoratedImageAPI", "decorated_image_api"]

#: Handler method → lifecycle step. The deactivate/reactivate actions are updates, sent
#: only when the image's status changed.
STEPS: Final = {
    "create": "create",
    "update": "update",
    "action": "status_action",
    "delete": "delete",
    "upload": "upload",
    "download": "send",
}


class DecoratedImageAPI(ImageAPI):
    """ImageAPI plus the one method the decorators need: the image record, or None."""

    def find_image(self, id: str) -> dict[str, Any] | None:
        return self.images.get(id)


def decorated_image_api(
    notifier: Notifier, data_dir: str | os.PathLike[str] | None = None
) -> DecoratedImageAPI:
    """A new app whose handlers notify through *notifier*."""
    namespace = {"__module__": __name__, "__doc__": DecoratedImageAPI.__doc__}
    subclass = cast(
        "type[DecoratedImageAPI]", type("DecoratedImageAPI", (DecoratedImageAPI,), namespace)
    )
    instrumented = instrument_class(notifier, STEPS, image="id", lookup="find_image")(subclass)
    return instrumented(data_dir)
