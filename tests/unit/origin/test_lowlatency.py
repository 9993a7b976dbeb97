"""The LL-HLS origin without a broker: PartReady records are folded in as the follower would
(`apply` then a wake on the loop). Every test runs through both doors a request can take: the
ASGI app (httpx in process; what the HTTP/2 ports serve) and the HTTP/1.1 listener as `onair
http` runs it (uvicorn on a loopback port, whose protocol parks blocking reloads in the origin
itself): same rules, same answers."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import m3u8
import pytest
import uvicorn

from gateway.http.app import create_app
from gateway.http.listen import Listeners, uvicorn_config
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


@pytest.fixture(params=["asgi", "listener"])
async def setup(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, Feed, Registry]]:
    store = LocalStore(tmp_path / "store")
    registry = Registry()
    origin = LowLatencyOrigin("unused:9092", config=CONFIG, window=30, registry=registry)
    origin._loop = asyncio.get_running_loop()
    app = create_app(
        store, extra_routes=origin.routes, registry=registry, part_waiter=origin.wait_for_part
    )
    app.state.ll_origin = origin  # as gateway/http/serve.py does
    if request.param == "asgi":
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://origin") as client:
            yield client, Feed(origin, store), registry
        return
    async with listener(app) as base_url:
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
            yield client, Feed(origin, store), registry


@contextlib.asynccontextmanager
async def listener(app: Any, keep_alive_s: float = 5) -> AsyncIterator[str]:
    """`onair http`'s HTTP/1.1 listener (uvicorn_config) on a free loopback port, in this
    test's event loop (the feed wakes the origin on it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:  # a thousand viewers: their sockets and the server's
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn_config(app, Listeners(host="127.0.0.1", http_port=0))
    config.lifespan = "off"
    config.timeout_keep_alive = keep_alive_s
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


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


def listened_app(tmp_path: Path) -> tuple[Any, Feed, Registry]:
    """The gateway app with an LL origin as `onair http` builds it, its feed and registry
    (on the running loop)."""
    store = LocalStore(tmp_path / "store")
    registry = Registry()
    origin = LowLatencyOrigin("unused:9092", config=CONFIG, window=30, registry=registry)
    origin._loop = asyncio.get_running_loop()
    app = create_app(store, extra_routes=origin.routes, registry=registry)
    app.state.ll_origin = origin
    return app, Feed(origin, store), registry


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Feed, Registry]]:
    """The listener alone (its own tests below): the base URL, the feed, the registry."""
    app, feed, registry = listened_app(tmp_path)
    async with listener(app) as base_url:
        yield base_url, feed, registry


async def test_the_listener_parks_blocking_reloads_in_the_origin_not_the_app(
    served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, feed, registry = served
    routed: list[int] = []
    block = LowLatencyOrigin._block

    async def counted(self: LowLatencyOrigin, *args: Any) -> Any:
        routed.append(1)
        return await block(self, *args)

    monkeypatch.setattr(LowLatencyOrigin, "_block", counted)
    feed.upto((2, 1))
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        params = {"_HLS_msn": 2, "_HLS_part": 2}
        waiters = [asyncio.create_task(client.get(URL, params=params)) for _ in range(200)]
        await parked(registry, 200)
        feed.part(2, 2)
        answers = await asyncio.gather(*waiters)
        metrics = (await client.get("/metrics")).text
    assert {a.status_code for a in answers} == {200} and routed == []
    line = 'onair_http_requests_total{route="/live/{channel}/{rendition}/ll.m3u8",status="200"}'
    assert f"{line} 200.0" in metrics
    assert registry.gauge("onair_ll_blocked_requests", "").value == 0


async def test_a_viewer_hanging_up_while_parked_is_let_go(served: Any) -> None:
    base_url, feed, registry = served
    feed.upto((2, 1))
    host, port = base_url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {URL}?_HLS_msn=2&_HLS_part=2 HTTP/1.1\r\nHost: o\r\n\r\n".encode())
    await parked(registry, 1)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.1)  # the server sees the hang-up
    feed.part(2, 2)  # the wake finds it gone: nothing written, nothing raised
    assert registry.gauge("onair_ll_blocked_requests", "").value == 0
    answers = registry.counter("onair_ll_playlist_requests_total", "", ("outcome",))
    assert answers.labels("blocked")._value.get() == 0, "an answer was counted for nobody"
    async with httpx.AsyncClient(base_url=base_url) as client:  # still serving
        assert (await client.get(URL)).status_code == 200


async def test_a_request_pipelined_behind_a_parked_one_is_answered_after_it(
    served: Any,
) -> None:
    base_url, feed, registry = served
    feed.upto((2, 1))
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET {URL}?_HLS_msn=2&_HLS_part=2 HTTP/1.1\r\nHost: o\r\n\r\n"
        f"GET /healthz HTTP/1.1\r\nHost: o\r\n\r\n".encode()
    )
    await parked(registry, 1)
    with pytest.raises(TimeoutError):  # the second is not answered before the first
        await asyncio.wait_for(reader.read(1), 0.3)
    feed.part(2, 2)
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    length = int(re.search(rb"content-length: (\d+)", first).group(1))  # type: ignore[union-attr]
    body = await reader.readexactly(length)
    assert b"#EXT-X-PART:" in body and b"000002.2.m4s" in body
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert second.startswith(b"HTTP/1.1 200 OK\r\n")
    assert await reader.readexactly(2) == b"ok"
    writer.close()


async def test_a_parked_request_outlives_the_keep_alive_timeout(tmp_path: Path) -> None:
    """An answer pipelined just before a parked request arms the idle timer: parking disarms
    it, or the connection would be closed under the waiting viewer."""
    app, feed, registry = listened_app(tmp_path)
    feed.upto((2, 1))
    async with listener(app, keep_alive_s=0.5) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET {URL} HTTP/1.1\r\nHost: o\r\n\r\n"
            f"GET {URL}?_HLS_msn=2&_HLS_part=2 HTTP/1.1\r\nHost: o\r\n\r\n".encode()
        )
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(re.search(rb"content-length: (\d+)", first).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        await parked(registry, 1)
        await asyncio.sleep(1.0)  # twice the idle timeout
        feed.part(2, 2)
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert second.startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()


async def test_a_failure_in_the_listener_leaves_the_request_to_the_app(
    served: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    base_url, feed, _ = served
    feed.upto((2, 1))

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(LowLatencyOrigin, "answer_or_park", broken)
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get(URL, params={"_HLS_msn": 2, "_HLS_part": 1})
    assert response.status_code == 200 and "#EXT-X-PART:" in response.text
    assert "the app answers it" in caplog.text and "_HLS_msn" not in caplog.text
