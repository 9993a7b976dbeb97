"""The object-store contract, shared by every implementation.

A test module imports these tests and defines a `store` fixture for its implementation.
"""

from __future__ import annotations

import threading

import pytest

from pipeline.errors import ObjectNotFound, StoreError
from pipeline.store import ObjectStore

SEGMENT_CACHE = "public, max-age=31536000, immutable"


def test_put_get_round_trip_keeps_metadata(store: ObjectStore) -> None:
    store.put(
        "streams/s1/720p30/000001.ts",
        b"\x47" * 188,
        content_type="video/mp2t",
        cache_control=SEGMENT_CACHE,
    )
    got = store.get("streams/s1/720p30/000001.ts")
    assert got.body == b"\x47" * 188
    assert got.content_type == "video/mp2t"
    assert got.cache_control == SEGMENT_CACHE
    assert got.etag


def test_missing_object(store: ObjectStore) -> None:
    assert not store.exists("nope/x.ts")
    with pytest.raises(ObjectNotFound):
        store.get("nope/x.ts")


def test_exists_list_by_prefix_and_delete(store: ObjectStore) -> None:
    for name in ("a/1.ts", "a/2.ts", "ab/3.ts", "b/4.ts"):
        store.put(name, name.encode(), content_type="video/mp2t", cache_control="no-cache")
    assert store.exists("a/1.ts")
    assert store.list("a/") == ["a/1.ts", "a/2.ts"]
    assert store.list("a") == ["a/1.ts", "a/2.ts", "ab/3.ts"]
    store.delete("a/1.ts")
    store.delete("a/1.ts")  # deleting twice is fine
    assert not store.exists("a/1.ts")
    assert store.list("a/") == ["a/2.ts"]


def test_overwrite_replaces_body_and_metadata(store: ObjectStore) -> None:
    key = "live/demo/720p30/index.m3u8"
    store.put(
        key, b"#EXTM3U\n1", content_type="application/vnd.apple.mpegurl", cache_control="max-age=1"
    )
    store.put(
        key, b"#EXTM3U\n2", content_type="application/vnd.apple.mpegurl", cache_control="max-age=2"
    )
    got = store.get(key)
    assert (got.body, got.cache_control) == (b"#EXTM3U\n2", "max-age=2")


@pytest.mark.parametrize(
    "key",
    ["../x", "/abs", "a//b", "a/../b", "a/./b", "", "a\\b", "a b"],
    ids=["parent", "absolute", "empty-part", "dotdot", "dot", "empty", "backslash", "space"],
)
def test_bad_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(StoreError):
        store.put(key, b"x", content_type="text/plain", cache_control="no-cache")


def test_readers_never_see_a_partial_object(store: ObjectStore) -> None:
    key = "live/demo/master.m3u8"
    bodies = [bytes([n]) * 300_000 for n in range(1, 6)]
    store.put(key, bodies[0], content_type="application/vnd.apple.mpegurl", cache_control="x")
    seen: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(store.get(key).body)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for body in bodies[1:]:
            store.put(key, body, content_type="application/vnd.apple.mpegurl", cache_control="x")
    finally:
        done.set()
        reader.join()
    assert seen
    assert all(body in bodies for body in seen)


def test_head_and_ranged_reads(store: ObjectStore) -> None:
    body = bytes(range(256)) * 40
    store.put("vod/s1/s1.mp4", body, content_type="video/mp4", cache_control="max-age=300")
    info = store.head("vod/s1/s1.mp4")
    whole = store.get("vod/s1/s1.mp4")
    assert (info.size, info.content_type, info.cache_control) == (
        len(body),
        "video/mp4",
        "max-age=300",
    )
    assert info.etag == whole.etag
    assert store.get_range("vod/s1/s1.mp4", 0, 0) == body[:1]
    assert store.get_range("vod/s1/s1.mp4", 100, 5099) == body[100:5100]
    assert store.get_range("vod/s1/s1.mp4", len(body) - 3, len(body) + 100) == body[-3:]
    with pytest.raises(StoreError):
        store.get_range("vod/s1/s1.mp4", len(body), len(body) + 10)
    with pytest.raises(StoreError):
        store.get_range("vod/s1/s1.mp4", 10, 9)
    with pytest.raises(ObjectNotFound):
        store.head("vod/s1/none.mp4")
    with pytest.raises(ObjectNotFound):
        store.get_range("vod/s1/none.mp4", 0, 10)
