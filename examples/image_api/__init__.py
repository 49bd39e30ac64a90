"""A small image service shaped like Glance's v2 API, for demos and tests."""

from .app import ImageAPI, app_factory

__all__ = ["ImageAPI", "app_factory"]
