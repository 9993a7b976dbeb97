"""The origin's fast lane answers a cached object exactly as the route does, and leaves every
other request to the route: the first GET of each object is the route's (a miss), the second
the fast lane's (a hit), and the two must not differ in status, headers or body."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gateway.http.app import create_app
from gateway.origin.cache import CacheConfig
from gateway.origin.hls import HlsOrigin
from tests.unit.http.conftest import CountingStore
from tests.unit.origin.test_hls import STREAM, fill

OBJECTS = [
    "/live/demo/master.m3u8",
    "/live/demo/720p30/index.m3u8",
    f"/live/demo/720p30/{STREAM}/000042.ts",
    f"/live/demo/720p30/{STREAM}/000042.3.m4s",
    f"/live/demo/720p30/{STREAM}/init-0123456789abcdef.mp4",
    f"/vod/{STREAM}/master.m3u8",
    f"/vod/{STREAM}/160p30/index.m3u8",
    f"/vod/{STREAM}/160p30/000007.ts",
]


@pytest.fixture
def app(store: CountingStore) -> Starlette:
    """The gateway with playlists kept a minute: a slow machine's pause between two requests
    must not turn the second into a miss."""
    return create_app(store, cache_config=CacheConfig(ttl_s=60, negative_ttl_s=60))


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys the route answered (its `respond`), so a test sees which path answered."""
    answered: list[str] = []
    respond = HlsOrigin.respond

    def counting(request: Any, obj: Any, *, ranges: bool) -> Any:
        answered.append(obj.key)
        return respond(request, obj, ranges=ranges)

    monkeypatch.setattr(HlsOrigin, "respond", staticmethod(counting))
    return answered


def fill_cmaf(store: CountingStore) -> None:
    folder = f"streams/{STREAM}/720p30"
    immutable = "public, max-age=31536000, immutable"
    store.put(f"{folder}/000042.3.m4s", b"moof" * 100, content_type="video/iso.segment",
              cache_control=immutable)  # fmt: skip
    store.put(f"{folder}/init-0123456789abcdef.mp4", b"ftyp" * 10, content_type="video/mp4",
              cache_control=immutable)  # fmt: skip


@pytest.mark.parametrize("path", OBJECTS)
async def test_a_cached_object_is_answered_as_the_route_answers_it(
    client: httpx.AsyncClient, store: CountingStore, routed: list[str], path: str
) -> None:
    fill(store)
    fill_cmaf(store)
    first = await client.get(path)
    assert first.status_code == 200
    assert len(routed) == 1, "the first request (a miss) is the route's"
    second = await client.get(path)
    assert len(routed) == 1, "the second request (a hit) is the fast lane's"
    assert second.status_code == first.status_code
    assert second.headers.multi_items() == first.headers.multi_items()
    assert second.content == first.content
    assert store.count(routed[0]) == 1  # one store read for both


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"range": "bytes=0-99"}, 200),  # segments are whole objects: Range is ignored
        ({"if-none-match": "*"}, 304),
        ({"if-range": '"another"', "range": "bytes=0-1"}, 200),  # a changed object: all of it
    ],
    ids=["range", "if-none-match", "if-range"],
)
async def test_conditional_and_ranged_requests_go_to_the_route(
    client: httpx.AsyncClient,
    store: CountingStore,
    routed: list[str],
    headers: dict[str, str],
    status: int,
) -> None:
    fill(store)
    path = f"/vod/{STREAM}/160p30/000007.ts"
    await client.get(path)
    answer = await client.get(path, headers=headers)
    assert len(routed) == 2
    assert answer.status_code == status


async def test_head_options_and_misses_go_to_the_route(
    client: httpx.AsyncClient, store: CountingStore, routed: list[str]
) -> None:
    fill(store)
    path = "/live/demo/720p30/index.m3u8"
    await client.get(path)
    head = await client.head(path)
    assert head.status_code == 200 and head.content == b""
    assert (await client.options(path)).status_code == 204
    assert (await client.get("/live/demo/480p30/index.m3u8")).status_code == 404
    assert len(routed) == 2  # the GET and the HEAD


async def test_the_metrics_count_the_fast_lane_under_the_route(
    client: httpx.AsyncClient, store: CountingStore, routed: list[str]
) -> None:
    fill(store)
    for _ in range(3):
        assert (await client.get("/live/demo/720p30/index.m3u8")).status_code == 200
    assert len(routed) == 1  # two of the three were the fast lane's
    metrics = (await client.get("/metrics")).text
    line = 'onair_http_requests_total{route="/live/{channel}/{rendition}/index.m3u8",status="200"}'
    assert f"{line} 3.0" in metrics


async def test_a_percent_encoded_path_is_not_the_fast_lanes(
    client: httpx.AsyncClient, store: CountingStore
) -> None:
    fill(store)
    await client.get("/live/demo/720p30/index.m3u8")  # cached: the fast lane could answer it
    # the decoded path is the cached playlist's; the raw one has a %: refused, as the route does
    assert (await client.get("/live/demo/720p30/index%2Em3u8")).status_code == 404


async def test_a_remembered_miss_is_the_routes_and_a_part_stored_later_is_served(
    client: httpx.AsyncClient, store: CountingStore, routed: list[str]
) -> None:
    fill(store)
    path = f"/vod/{STREAM}/160p30/000008.ts"
    assert (await client.get(path)).status_code == 404  # remembered as missing
    assert (await client.get(path)).status_code == 404  # the route's answer again, not a crash
    assert routed == []
