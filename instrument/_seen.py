"""Images this filter has seen in responses: metadata it need not ask the application for.

A download needs the image's owner and size, and a delete the image's metadata (the
payload of image.delete), neither of which their responses carry: without a memory
each costs an internal metadata subrequest (see :mod:`instrument._subrequest`), about
as much as the request itself. The filter remembers the image it reads from each
lifecycle response (a create, an update, the lookup after an upload or an action)
and uses it where staleness cannot mislead:

- a **download** of an image remembered as ``active``: an active image's size never
  changes (new data means a new image), and its owner only by an administrator;
- a **delete**: the payload is the image as this filter last saw it. An update made
  through another process (another worker, another API node) since then is not in
  it; a subrequest would see it. ``seen_images = 0`` makes every delete ask.
- an **upload** of an image remembered as able to take data: its image.prepare shows
  the remembered image. It goes out when the application reads the data (a refusal
  reads nothing), so a stale memory cannot prepare an upload the application refuses.

Updates and deletes seen by the filter replace or drop the remembered image, and an
accepted import drops it. What it cannot see (a change made through another worker or
API node, such as an owner an administrator set) is bounded in time: a remembered image
answers for *max_age* seconds after it was seen, then the application is asked again.
The memory is a bounded LRU.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SeenImages"]


class SeenImages:
    """At most *size* images by id, least recently used first out, each answering for
    *max_age* seconds after it was seen; thread-safe."""

    def __init__(
        self, size: int, max_age: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.max_age = max_age
        self._clock = clock
        self._images: collections.OrderedDict[str, tuple[Mapping[str, Any], float]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def remember(self, image: Mapping[str, Any]) -> None:
        """Keep *image* (notification-shaped, with a string ``id``) as the latest seen."""
        image_id = image.get("id")
        if not self.size or not isinstance(image_id, str):
            return
        seen_at = self._clock()
        with self._lock:
            self._images[image_id] = (image, seen_at)
            self._images.move_to_end(image_id)
            if len(self._images) > self.size:
                self._images.popitem(last=False)

    def forget(self, image_id: str | None) -> None:
        if image_id is not None and self.size:
            with self._lock:
                self._images.pop(image_id, None)

    def get(self, image_id: str | None) -> Mapping[str, Any] | None:
        """The image last seen with *image_id*, or None (also once it is too old)."""
        if image_id is None or not self.size:
            return None
        now = self._clock()
        with self._lock:
            entry = self._images.get(image_id)
            if entry is None:
                return None
            image, seen_at = entry
            if now - seen_at >= self.max_age:
                del self._images[image_id]
                return None
            self._images.move_to_end(image_id)
            return image

    def active(self, image_id: str | None) -> Mapping[str, Any] | None:
        """The image last seen with *image_id* if it was active (owner and size final)."""
        image = self.get(image_id)
        return image if image is not None and image.get("status") == "active" else None

    def __len__(self) -> int:
        return len(self._images)
