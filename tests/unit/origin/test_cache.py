"""The origin cache: single-flight, TTL for playlists, LRU by bytes, remembered misses."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from gateway.origin.cache import CacheConfig, ObjectCache
from pipeline.errors import ObjectNotFound, StoreError
from pipeline.store import StoredObject
from tests.unit.http.conftest import CountingStore, put_playlist, put_segment

SEGMENT = "streams/s1/720p30/000001.ts"
SEGMENT_URL = "/live/demo/720p30/s1/000001.ts"


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def wait_until(predicate: object, timeout_s: float = 5.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_fifty_concurrent_requests_make_one_store_read(
    app: Starlette, client: httpx.AsyncClient, store: CountingStore
) -> None:
    body = b"\x47" * 188 * 100
    put_segment(store, SEGMENT, body)
    cache: ObjectCache = app.state.cache
    store.gate = threading.Event()

    requests = [asyncio.create_task(client.get(SEGMENT_URL)) for _ in range(50)]
    # Every request is waiting on the one read before the store is allowed to answer.
    await wait_until(lambda: cache.stats().coalesced == 49)
    assert store.count(SEGMENT) == 1
    store.gate.set()
    responses = await asyncio.gather(*requests)

    assert [r.status_code for r in responses] == [200] * 50
    assert all(r.content == body for r in responses)
    assert store.count(SEGMENT) == 1
    stats = cache.stats()
    assert (stats.misses, stats.coalesced, stats.store_reads) == (1, 49, 1)

    # Later viewers are served from memory.
    await client.get(SEGMENT_URL)
    assert store.count(SEGMENT) == 1
    assert cache.stats().hits == 1


async def test_playlist_burst_costs_one_read_per_ttl(
    client: httpx.AsyncClient, store: CountingStore
) -> None:
    key = "live/demo/720p30/index.m3u8"
    put_playlist(store, key, "#EXTM3U\n#v1\n")
    started = time.monotonic()
    bodies = {(await client.get("/live/demo/720p30/index.m3u8")).text for _ in range(30)}
    elapsed_s = time.monotonic() - started
    assert store.count(key) <= 1 + elapsed_s // 0.2  # the fixture's TTL
    assert bodies == {"#EXTM3U\n#v1\n"}

    put_playlist(store, key, "#EXTM3U\n#v2\n")
    await asyncio.sleep(0.25)
    assert (await client.get("/live/demo/720p30/index.m3u8")).text == "#EXTM3U\n#v2\n"


async def test_segment_written_after_a_miss_appears_after_negative_ttl(
    client: httpx.AsyncClient, store: CountingStore
) -> None:
    assert (await client.get(SEGMENT_URL)).status_code == 404
    put_segment(store, SEGMENT, b"late")
    assert (await client.get(SEGMENT_URL)).status_code == 404  # remembered miss
    assert store.count(SEGMENT) == 1
    await asyncio.sleep(0.25)
    assert (await client.get(SEGMENT_URL)).content == b"late"


def make_cache(
    store: CountingStore, clock: ManualClock, config: CacheConfig | None = None
) -> ObjectCache:
    return ObjectCache(store, config or CacheConfig(ttl_s=0.5, negative_ttl_s=0.5), clock=clock)


async def test_ttl_follows_cache_control(tmp_path: Path) -> None:
    store, clock = CountingStore(tmp_path), ManualClock()
    cache = make_cache(store, clock)
    put_playlist(store, "live/demo/master.m3u8", "#EXTM3U\n")
    put_segment(store, SEGMENT, b"seg")
    store.put("vod/s1/x.json", b"{}", content_type="application/json", cache_control="no-store")
    for key in ("live/demo/master.m3u8", SEGMENT, "vod/s1/x.json"):
        await cache.get(key)
        await cache.get(key)
    assert store.count("live/demo/master.m3u8") == 1
    assert store.count(SEGMENT) == 1
    assert store.count("vod/s1/x.json") == 2  # no-store: never kept

    clock.now += 0.49
    await cache.get("live/demo/master.m3u8")
    assert store.count("live/demo/master.m3u8") == 1
    clock.now += 0.02
    await cache.get("live/demo/master.m3u8")
    assert store.count("live/demo/master.m3u8") == 2

    clock.now += 10**6
    await cache.get(SEGMENT)
    assert store.count(SEGMENT) == 1  # immutable: kept until evicted


async def test_misses_are_remembered_briefly(tmp_path: Path) -> None:
    store, clock = CountingStore(tmp_path), ManualClock()
    cache = make_cache(store, clock, CacheConfig(negative_ttl_s=0.5))
    for _ in range(3):
        with pytest.raises(ObjectNotFound):
            await cache.get(SEGMENT)
    assert store.count(SEGMENT) == 1
    assert cache.stats().negative_hits == 2
    put_segment(store, SEGMENT, b"now")
    clock.now += 0.6
    assert (await cache.get(SEGMENT)).body == b"now"


async def test_lru_is_bounded_by_bytes(tmp_path: Path) -> None:
    store, clock = CountingStore(tmp_path), ManualClock()
    cache = make_cache(store, clock, CacheConfig(max_bytes=3 * 1400, max_object_bytes=2000))
    keys = [f"streams/s1/720p30/{i:06d}.ts" for i in range(5)]
    for key in keys:
        put_segment(store, key, b"x" * 1000)
    put_segment(store, "streams/s1/720p30/999999.ts", b"x" * 3000)

    for key in keys[:3]:
        await cache.get(key)
    await cache.get(keys[0])  # most recently used now
    await cache.get(keys[3])  # pushes out keys[1], the least recently used
    assert cache.stats().evictions == 1
    assert cache.stats().bytes <= 3 * 1400
    await cache.get(keys[0])
    await cache.get(keys[2])
    assert store.count(keys[0]) == 1
    assert store.count(keys[2]) == 1
    await cache.get(keys[1])
    assert store.count(keys[1]) == 2

    await cache.get("streams/s1/720p30/999999.ts")  # above max_object_bytes: not kept
    await cache.get("streams/s1/720p30/999999.ts")
    assert store.count("streams/s1/720p30/999999.ts") == 2


class FailingStore(CountingStore):
    """Counts and gates like CountingStore, then fails the way a broken disk or S3 does."""

    def get(self, key: str) -> StoredObject:
        put_segment(self, key, b"present")
        super().get(key)
        raise StoreError("disk on fire")


async def test_store_failures_reach_every_waiter_and_are_not_kept(tmp_path: Path) -> None:
    store = FailingStore(tmp_path)
    store.gate = threading.Event()
    cache = ObjectCache(store)
    waiters = [asyncio.create_task(cache.get(SEGMENT)) for _ in range(5)]
    await wait_until(lambda: cache.stats().coalesced == 4)
    store.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert [type(r) for r in results] == [StoreError] * 5
    with pytest.raises(StoreError):
        await cache.get(SEGMENT)
    assert store.count(SEGMENT) == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_read(tmp_path: Path) -> None:
    store = CountingStore(tmp_path)
    put_segment(store, SEGMENT, b"seg")
    store.gate = threading.Event()
    cache = ObjectCache(store)
    leader = asyncio.create_task(cache.get(SEGMENT))
    follower = asyncio.create_task(cache.get(SEGMENT))
    await wait_until(lambda: cache.stats().coalesced == 1)
    leader.cancel()
    await asyncio.sleep(0)
    store.gate.set()
    assert (await follower).body == b"seg"
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert store.count(SEGMENT) == 1


class OutageStore(CountingStore):
    """The real LocalStore whose reads fail while `down` (an S3 outage)."""

    down = False

    def get(self, key: str) -> StoredObject:
        if self.down:
            with self._lock:
                self.gets.append(key)
            raise StoreError(f"get {key}: could not connect")
        return super().get(key)


async def test_while_the_store_fails_a_recent_playlist_is_served_stale(tmp_path: Path) -> None:
    store, clock = OutageStore(tmp_path), ManualClock()
    cache = make_cache(store, clock, CacheConfig(ttl_s=0.5, stale_if_error_s=60))
    put_playlist(store, "live/demo/720p30/index.m3u8", "#EXTM3U\n#one\n")
    first = await cache.get("live/demo/720p30/index.m3u8")
    store.down = True
    clock.now += 30  # long expired, within stale-if-error
    assert (await cache.get("live/demo/720p30/index.m3u8")).body == first.body
    clock.now += 31  # past it: the error shows
    with pytest.raises(StoreError):
        await cache.get("live/demo/720p30/index.m3u8")
    store.down = False
    put_playlist(store, "live/demo/720p30/index.m3u8", "#EXTM3U\n#two\n")
    assert (await cache.get("live/demo/720p30/index.m3u8")).body == b"#EXTM3U\n#two\n"


async def test_no_stale_answer_for_what_was_never_found(tmp_path: Path) -> None:
    store, clock = OutageStore(tmp_path), ManualClock()
    cache = make_cache(store, clock)
    with pytest.raises(ObjectNotFound):
        await cache.get("live/demo/720p30/index.m3u8")
    store.down = True
    clock.now += 1
    with pytest.raises(StoreError) as caught:
        await cache.get("live/demo/720p30/index.m3u8")
    assert not isinstance(caught.value, ObjectNotFound)
