"""The example image API for the malformed-input corpus: deterministic, bare or filtered.

``gunicorn tests.support.corpus_app:application`` or ``python -m waitress ...`` serves it.
Each server runs in its own process, so the clock and the id source of the example
application can be fixed for that process: two servers that receive the same requests
in the same order then answer byte for byte the same, and any difference between the
bare and the filtered one is the kit's.

Environment: ``IMAGE_API_DATA_DIR`` (image data), ``CORPUS_FILTERED=1`` (put the filter
in front, configured by ``INSTRUMENT_*``), ``CORPUS_KIT_LOG`` (a file for what the kit
logs under the ``instrument`` logger, so the test sees any exception the kit caught).
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from types import SimpleNamespace

from examples.image_api import app as image_app
from instrument.middleware import filter_factory

_ids = itertools.count(1)
image_app._now = lambda: "2024-01-01T00:00:00Z"  # type: ignore[attr-defined]
image_app.uuid = SimpleNamespace(uuid4=lambda: uuid.UUID(int=next(_ids)))  # type: ignore[attr-defined]

if os.environ.get("CORPUS_KIT_LOG"):
    _handler = logging.FileHandler(os.environ["CORPUS_KIT_LOG"], encoding="utf-8")
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger("instrument").addHandler(_handler)

bare = image_app.ImageAPI(os.environ["IMAGE_API_DATA_DIR"])
application = filter_factory({})(bare) if os.environ.get("CORPUS_FILTERED") else bare
