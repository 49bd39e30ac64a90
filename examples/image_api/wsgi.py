"""The example image API behind the instrument middleware, as a WSGI module for any server.

    gunicorn examples.image_api.wsgi:application

Options come from ``INSTRUMENT_*`` environment variables (``INSTRUMENT_STRATEGY=logging``);
``IMAGE_API_DATA_DIR`` says where image data is stored (default: a temporary directory).
"""

from __future__ import annotations

import os

from instrument.middleware import filter_factory

from .app import ImageAPI

application = filter_factory({})(ImageAPI(os.environ.get("IMAGE_API_DATA_DIR")))
