"""The filter's memory of images seen in responses: bounded, least recently used out."""

from __future__ import annotations

from instrument._seen import SeenImages


def test_remembers_at_most_its_size_dropping_the_least_recently_used() -> None:
    seen = SeenImages(3)
    for number in range(3):
        seen.remember({"id": f"i{number}", "status": "active"})
    assert seen.get("i0") is not None  # i0 is now the most recently used
    seen.remember({"id": "i3", "status": "active"})
    assert len(seen) == 3 and seen.get("i1") is None and seen.get("i0") is not None


def test_the_latest_image_replaces_an_older_one_and_forget_drops_it() -> None:
    seen = SeenImages(8)
    seen.remember({"id": "i1", "status": "queued", "name": "a"})
    seen.remember({"id": "i1", "status": "active", "name": "b"})
    assert seen.get("i1") == {"id": "i1", "status": "active", "name": "b"}
    seen.forget("i1")
    assert seen.get("i1") is None


def test_only_active_images_answer_for_downloads() -> None:
    seen = SeenImages(8)
    seen.remember({"id": "q", "status": "queued"})
    seen.remember({"id": "a", "status": "active"})
    assert seen.active("q") is None and seen.active("a") == {"id": "a", "status": "active"}


def test_size_0_remembers_nothing_and_images_without_a_string_id_are_ignored() -> None:
    off = SeenImages(0)
    off.remember({"id": "i1", "status": "active"})
    assert off.get("i1") is None
    seen = SeenImages(8)
    seen.remember({"id": None})
    seen.remember({"name": "no id"})
    assert len(seen) == 0


def test_an_image_answers_for_max_age_seconds_after_it_was_seen() -> None:
    now = [100.0]
    seen = SeenImages(8, max_age=60.0, clock=lambda: now[0])
    seen.remember({"id": "i1", "status": "active", "owner": "t1"})
    now[0] = 159.9
    assert seen.active("i1") == {"id": "i1", "status": "active", "owner": "t1"}
    now[0] = 160.0  # the application is asked again from now on
    assert seen.active("i1") is None and seen.get("i1") is None and len(seen) == 0
    seen.remember({"id": "i1", "status": "active", "owner": "t2"})  # what it answered
    assert seen.get("i1") == {"id": "i1", "status": "active", "owner": "t2"}
