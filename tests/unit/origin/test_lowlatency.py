"""The LL-HLS origin without a broker: PartReady records are folded in as the follower would
(`apply` then a wake on the loop), requests go through the ASGI app with httpx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import m3u8
import pytest

from gateway.http.app import create_app
from gateway.origin.lowlatency import LowLatencyOrigin
from objectstore.local import LocalStore
from pipeline.llhls import LlConfig
from pipeline.metrics import Registry
from tests.llcheck import check_ll_media
from tests.unit.test_llhls import PARTS
from tests.unit.test_llhls import record as make_record

CONFIG = LlConfig(part_target_s=0.5, target_duration_s=1)  # the segments are 2 s: 503 after 6 s


class Feed:
    """Stands in for the follower's thread: records in, waiters woken on the loop."""

    def __init__(self, origin: LowLatencyOrigin, store: LocalStore) -> None:
        self.origin, self.store = origin, store

    def part(self, sequence: int, part: int, rendition: str = "360p30", **extra: Any) -> None:
        record = make_record(sequence, part, **extra)
        folder = f"streams/s1/{rendition}"
        record.update(rendition=rendition, renditions=["360p30", "160p30"])
        for field in ("key", "init_key", "segment_key"):
            if record[field]:
                record[field] = record[field].replace("streams/s1/360p30", folder)
                self.store.put(record[field], b"media", content_type="video/iso.segment",
                               cache_control="public, max-age=31536000, immutable")  # fmt: skip
        with self.origin._lock:
            changed = self.origin.apply(record)
        self.origin._wake(changed)

    def upto(self, last: tuple[int, int], rendition: str = "360p30") -> None:
        for sequence in range(last[0] + 1):
            for part in range(PARTS):
                if (sequence, part) <= last:
                    self.part(sequence, part, rendition)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Feed, Registry]]:
    store = LocalStore(tmp_path / "store")
    registry = Registry()
    origin = LowLatencyOrigin("unused:9092", config=CONFIG, window=30, registry=registry)
    origin._loop = asyncio.get_running_loop()
    app = create_app(
        store, extra_routes=origin.routes, registry=registry, part_waiter=origin.wait_for_part
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://origin") as client:
        yield client, Feed(origin, store), registry


URL = "/live/c/360p30/ll.m3u8"


async def parked(registry: Registry, count: int) -> None:
    """Until `count` playlist requests wait for a part (the origin's own gauge)."""
    gauge = registry.gauge("onair_ll_blocked_requests", "")
    deadline = time.monotonic() + 10
    while gauge.value < count:
        assert time.monotonic() < deadline, f"{gauge.value} of {count} requests parked"
        await asyncio.sleep(0.01)


async def test_a_blocking_request_is_answered_when_its_part_is_listed(setup: Any) -> None:
    client, feed, registry = setup
    feed.upto((2, 1))
    feed.upto((2, 1), "160p30")
    request = asyncio.create_task(client.get(URL, params={"_HLS_msn": 2, "_HLS_part": 2}))
    await parked(registry, 1)
    assert not request.done(), "answered before the part was listed"
    feed.part(2, 2)
    started = time.monotonic()
    response = await request
    assert time.monotonic() - started < 0.2
    assert response.status_code == 200
    checked = check_ll_media(response.text, others=["160p30"])
    assert (checked.last_msn, checked.last_part) == (2, 2)
    assert response.headers["cache-control"] == "public, max-age=12"  # six target durations
    plain = await client.get(URL)
    assert plain.headers["cache-control"] == "public, max-age=1"


@pytest.mark.parametrize(
    "params",
    [
        {"_HLS_part": "1"},
        {"_HLS_msn": "x"},
        {"_HLS_msn": "9"},
        {"_HLS_msn": "1", "_HLS_part": "-1"},
    ],
    ids=["part-without-msn", "not-a-number", "too-far-ahead", "negative-part"],
)
async def test_bad_blocking_requests_are_400(setup: Any, params: dict[str, str]) -> None:
    client, feed, _ = setup
    feed.upto((2, 1))
    response = await client.get(URL, params=params)
    assert response.status_code == 400 and response.headers["cache-control"] == "no-cache"


async def test_a_part_that_does_not_come_is_503_after_three_target_durations(setup: Any) -> None:
    client, feed, _ = setup
    feed.upto((2, 1))
    started = time.monotonic()
    response = await client.get(URL, params={"_HLS_msn": 3, "_HLS_part": 0})
    waited = time.monotonic() - started
    assert response.status_code == 503
    assert 6 <= waited < 7  # three target durations: the segments' 2 s, not the configured 1 s


async def test_a_thousand_waiters_are_answered_from_one_render(setup: Any) -> None:
    client, feed, registry = setup
    feed.upto((2, 1))
    renders = registry.counter("onair_ll_playlist_renders_total", "")
    before = renders.value
    params = {"_HLS_msn": 2, "_HLS_part": 2}
    waiters = [asyncio.create_task(client.get(URL, params=params)) for _ in range(1000)]
    await parked(registry, 1000)
    assert not any(w.done() for w in waiters)
    feed.part(2, 2)
    answers = await asyncio.gather(*waiters)
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert renders.value - before == 1


async def test_a_delta_update_skips_the_old_segments(setup: Any) -> None:
    client, feed, _ = setup
    feed.upto((20, 1))
    full = m3u8.loads((await client.get(URL)).text)
    delta = await client.get(URL, params={"_HLS_msn": 20, "_HLS_part": 1, "_HLS_skip": "YES"})
    checked = check_ll_media(delta.text)
    skipped = checked.playlist.skip.skipped_segments
    assert skipped > 0 and "#EXT-X-SKIP" in delta.text
    assert [s.uri for s in full.segments][skipped:] == [s.uri for s in checked.playlist.segments]
    zipped = await client.get(URL, params={"_HLS_skip": "v2"}, headers={"accept-encoding": "gzip"})
    assert zipped.headers.get("content-encoding") == "gzip" and zipped.text == delta.text


async def test_the_preload_hinted_part_waits_for_its_event(setup: Any) -> None:
    client, feed, _ = setup
    feed.upto((2, 1))
    hint = m3u8.loads((await client.get(URL)).text).preload_hint.uri
    assert hint == "s1/000002.2.m4s"
    request = asyncio.create_task(client.get(f"/live/c/360p30/{hint}"))
    await asyncio.sleep(0.3)
    assert not request.done()
    feed.part(2, 2)
    response = await request
    assert response.status_code == 200 and response.content == b"media"
    assert "immutable" in response.headers["cache-control"]
    far = await client.get("/live/c/360p30/s1/000009.0.m4s")
    assert far.status_code == 404  # not a part any hint names: no wait


async def test_the_master_lists_every_rendition_once_each_has_a_segment(setup: Any) -> None:
    client, feed, _ = setup
    feed.upto((0, 3))
    assert (await client.get("/live/c/ll.m3u8")).status_code == 404  # 160p30 has nothing yet
    feed.upto((0, 3), "160p30")
    master = m3u8.loads((await client.get("/live/c/ll.m3u8")).text)
    assert sorted(p.uri for p in master.playlists) == ["160p30/ll.m3u8", "360p30/ll.m3u8"]
