"""Downloads answered from Glance's image cache, in the caching flavours, with a real Keystone.

Glance's pipeline is ``... authtoken context notifications cache [cachemanage] rootapp``
(``image_cache_dir`` set): the filter stands before Glance's ``cache`` filter, which
answers a cached download itself, so the filter sees it like any other. An image is
uploaded and downloaded twice: the first download is a cache miss that fills the cache
(Glance's caching iterator), the second is served from the cache, which Glance's own
cache listing proves (the image listed, its ``hits`` counted: ``GET /v2/cache`` in
``keystone+caching``, the ``cachemanage`` filter's ``GET /v2/cached_images`` in
``keystone+cachemanagement``). Then a download from the cache is aborted by the client.
Every step is compared with Glance's own notifications as in the parity table: the
cache filter emits its own image.send (``glance.api.common.size_checked_iter``).
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .configs import Setup
from .environment import Glance, running_glance
from .keystone import Keystone, Token, running_keystone
from .parity import assert_explained, published_table
from .scenario import IMAGE_SIZE, Recorder, Step, _aborted, _image_id, _ok, _upload

pytestmark = pytest.mark.glance

FLAVORS = ("keystone+caching", "keystone+cachemanagement")
#: Where each flavour lists the cache: Glance's v2 cache API, or the cachemanage filter.
LISTING = {"keystone+caching": "/v2/cache", "keystone+cachemanagement": "/v2/cached_images"}
STEPS = ("create", "upload", "download (fills the cache)", "cached download", "cached abort")


def _cached(glance: Glance, path: str, image_id: str) -> dict[str, Any] | None:
    """This image's record in Glance's cache listing (None: not cached)."""
    connection = http.client.HTTPConnection("127.0.0.1", glance.port, timeout=30)
    try:
        connection.request("GET", path, headers={"X-Auth-Token": glance.env["OS_AUTH_TOKEN"]})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 200, (path, response.status, body[:500])
    records = json.loads(body)["cached_images"]
    return next((r for r in records if r["image_id"] == image_id), None)


def _cache_scenario(glance: Glance, work: Path, listing: str) -> list[Step]:
    data = os.urandom(IMAGE_SIZE)
    (work / "image.bin").write_bytes(data)
    recorder = Recorder(glance)
    image: dict[str, str] = {}

    def create() -> dict[str, Any]:
        output = _ok(glance.glance("image-create", "--name", "cached", "--disk-format", "raw",
                                   "--container-format", "bare"))  # fmt: skip
        image["id"] = _image_id(output["output"])
        return output

    def download(name: str) -> dict[str, Any]:
        before = _cached(glance, listing, image["id"])
        target = work / name
        facts = _ok(glance.glance("image-download", "--file", str(target), image["id"]))
        facts["identical"] = target.read_bytes() == data
        return {**facts, "before": before, "after": _cached(glance, listing, image["id"])}

    def aborted() -> dict[str, Any]:
        before = _cached(glance, listing, image["id"])
        facts = _aborted(glance, image["id"])
        return {**facts, "before": before, "after": _cached(glance, listing, image["id"])}

    plan = [
        (Step("create", "glance image-create --name cached"), create),
        (
            Step("upload", "glance image-upload --file image.bin (8 MiB)", upload=True),
            lambda: _upload(glance, work / "image.bin", image["id"]),
        ),
        (
            Step("download (fills the cache)", "glance image-download (cache miss)"),
            lambda: download("first.bin"),
        ),
        (
            Step("cached download", "glance image-download (served from the cache)"),
            lambda: download("second.bin"),
        ),
        (
            Step("cached abort", "GET .../file from the cache, client closes after ~192 KiB"),
            aborted,
        ),
    ]
    for step, action in plan:
        recorder.record(step, action)
    return recorder.steps


@pytest.fixture(scope="module")
def keystone(keystone_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystone]:
    with running_keystone(keystone_venv, tmp_path_factory.mktemp("cache-keystone")) as running:
        yield running


@pytest.fixture(scope="module", params=FLAVORS)
def recorded(
    request: pytest.FixtureRequest,
    glance_venv: Path,
    keystone: Keystone,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Step], Token]:
    flavor = request.param
    work = tmp_path_factory.mktemp("glance-cache")
    token = keystone.token()
    setup = Setup(
        flavor=flavor, token=token.id, extra_conf=keystone.authtoken_conf(), image_cache=True
    )
    with running_glance(glance_venv, work, setup) as glance:
        steps = _cache_scenario(glance, work, LISTING[flavor])
    variable = "INSTRUMENT_GLANCE_CACHE_TABLE"
    by_name = published_table(steps, variable if flavor == FLAVORS[0] else f"{variable}_MANAGE")
    assert tuple(by_name) == STEPS
    return by_name, token


def _sends(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == "image.send"]


@pytest.mark.parametrize("name", STEPS)
def test_kit_emits_what_glance_emits(recorded: tuple[dict[str, Step], Token], name: str) -> None:
    assert_explained(recorded[0][name])


def test_the_second_download_is_served_from_glances_cache(
    recorded: tuple[dict[str, Step], Token],
) -> None:
    steps = recorded[0]
    first, second = steps["download (fills the cache)"], steps["cached download"]
    assert first.facts["before"] is None and first.facts["after"] is not None
    assert first.facts["after"]["size"] == IMAGE_SIZE
    assert second.facts["identical"]
    assert second.facts["after"]["hits"] == second.facts["before"]["hits"] + 1
    # The cache filter's image.send has destination_ip; the store path's has not.
    (miss,), (hit,) = _sends(first.native), _sends(second.native)
    assert "destination_ip" not in miss["payload"] and "destination_ip" in hit["payload"]


def test_a_cached_download_is_counted_like_any_other(
    recorded: tuple[dict[str, Step], Token],
) -> None:
    steps, token = recorded
    for name in ("download (fills the cache)", "cached download"):
        (kit,) = _sends(steps[name].kit)
        (native,) = _sends(steps[name].native)
        for event in (kit, native):
            payload = event["payload"]
            assert event["priority"] == "INFO", name
            assert payload["bytes_sent"] == IMAGE_SIZE, name
            assert (payload["receiver_tenant_id"], payload["receiver_user_id"]) == (
                token.project_id,
                token.user_id,
            ), name
        assert kit["payload"]["owner_id"] == native["payload"]["owner_id"] == token.project_id


def test_an_aborted_cached_download_is_an_error_with_the_partial_count(
    recorded: tuple[dict[str, Step], Token],
) -> None:
    step = recorded[0]["cached abort"]
    assert step.facts["status_line"].endswith("200 OK")
    assert step.facts["before"] is not None  # cached (hits are counted when Glance's cache
    # generator is collected, which an abort leaves to the garbage collector: not asserted)
    (kit,) = _sends(step.kit)
    assert kit["priority"] == "ERROR"
    assert step.facts["body_received"] <= kit["payload"]["bytes_sent"] < IMAGE_SIZE
    # Served from the cache: only the cache filter's iterator notifies an abort (on close());
    # the store's path is silent (the parity test's "aborted download").
    (native,) = _sends(step.native)
    assert native["priority"] == "ERROR"
    # Glance counts what it read from the cache file; the kit, what the client acknowledged.
    assert kit["payload"]["bytes_sent"] <= native["payload"]["bytes_sent"] < IMAGE_SIZE
