"""The HLS origin over a real LocalStore: URL → key, headers, conditional and ranged GETs."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from gateway.http.app import create_app
from gateway.origin import hls
from gateway.origin.cache import CacheConfig
from gateway.origin.hls import RangeNotSatisfiable, etag_matches, parse_range
from objectstore.local import LocalStore
from tests.unit.http.conftest import (
    PLAYLIST_CC,
    SEGMENT_CC,
    CountingStore,
    put_playlist,
    put_segment,
    raw_get,
)

STREAM = "demo-20250101T000000Z-ab12"
MP4_BODY = bytes(range(256)) * 40  # 10240 bytes


def fill(store: LocalStore) -> None:
    put_playlist(store, "live/demo/master.m3u8", "#EXTM3U\n#master\n")
    put_playlist(store, "live/demo/720p30/index.m3u8", "#EXTM3U\n#media 720p30\n")
    put_segment(store, f"streams/{STREAM}/720p30/000042.ts", b"\x47" * 188 * 4)
    put_playlist(store, f"vod/{STREAM}/master.m3u8", "#EXTM3U\n#vod master\n")
    put_playlist(store, f"vod/{STREAM}/160p30/index.m3u8", "#EXTM3U\n#vod media\n")
    put_segment(store, f"streams/{STREAM}/160p30/000007.ts", b"\x47" * 188)
    store.put(
        f"streams/{STREAM}/160p30/000007.m4s",
        b"\0\0\0\x08moof",
        content_type="video/iso.segment",
        cache_control=SEGMENT_CC,
    )
    store.put(
        f"streams/{STREAM}/160p30/init-0123456789abcdef.mp4",
        b"\0\0\0\x08ftyp",
        content_type="video/mp4",
        cache_control=SEGMENT_CC,
    )
    store.put(
        f"vod/{STREAM}/recording.mp4",
        MP4_BODY,
        content_type="video/mp4",
        cache_control="public, max-age=86400",
    )
    store.put(
        f"vod/{STREAM}/thumb.jpg", b"\xff\xd8jpeg", content_type="image/jpeg", cache_control=""
    )
    store.put(
        f"vod/{STREAM}/chapters.vtt",
        b"WEBVTT\n",
        content_type="text/vtt",
        cache_control="public, max-age=60",
    )


ROUTES = [
    ("/live/demo/master.m3u8", "live/demo/master.m3u8", "application/vnd.apple.mpegurl"),
    (
        "/live/demo/720p30/index.m3u8",
        "live/demo/720p30/index.m3u8",
        "application/vnd.apple.mpegurl",
    ),
    (f"/live/demo/720p30/{STREAM}/000042.ts", f"streams/{STREAM}/720p30/000042.ts", "video/mp2t"),
    (f"/vod/{STREAM}/master.m3u8", f"vod/{STREAM}/master.m3u8", "application/vnd.apple.mpegurl"),
    (
        f"/vod/{STREAM}/160p30/index.m3u8",
        f"vod/{STREAM}/160p30/index.m3u8",
        "application/vnd.apple.mpegurl",
    ),
    (f"/vod/{STREAM}/160p30/000007.ts", f"streams/{STREAM}/160p30/000007.ts", "video/mp2t"),
    (
        f"/vod/{STREAM}/160p30/000007.m4s",
        f"streams/{STREAM}/160p30/000007.m4s",
        "video/iso.segment",
    ),
    (
        f"/vod/{STREAM}/160p30/init-0123456789abcdef.mp4",
        f"streams/{STREAM}/160p30/init-0123456789abcdef.mp4",
        "video/mp4",
    ),
    (f"/vod/{STREAM}/recording.mp4", f"vod/{STREAM}/recording.mp4", "video/mp4"),
    (f"/vod/{STREAM}/thumb.jpg", f"vod/{STREAM}/thumb.jpg", "image/jpeg"),
    (f"/vod/{STREAM}/chapters.vtt", f"vod/{STREAM}/chapters.vtt", "text/vtt; charset=utf-8"),
]
ROUTE_IDS = [
    "live-master",
    "live-media",
    "live-segment",
    "vod-master",
    "vod-media",
    "vod-segment",
    "vod-cmaf-segment",
    "vod-cmaf-init",
    "vod-mp4",
    "vod-jpg",
    "vod-vtt",
]


@pytest.mark.parametrize(("url", "key", "content_type"), ROUTES, ids=ROUTE_IDS)
async def test_url_maps_to_key(
    client: httpx.AsyncClient, store: CountingStore, url: str, key: str, content_type: str
) -> None:
    fill(store)
    response = await client.get(url)
    assert response.status_code == 200
    assert response.content == store.get(key).body
    assert store.gets[0] == key
    assert response.headers["content-type"] == content_type
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["etag"] == f'"{store.get(key).etag}"'


@pytest.mark.parametrize(
    ("url", "cache_control"),
    [
        ("/live/demo/master.m3u8", PLAYLIST_CC),
        (f"/live/demo/720p30/{STREAM}/000042.ts", SEGMENT_CC),
        (f"/vod/{STREAM}/recording.mp4", "public, max-age=86400"),
        (f"/vod/{STREAM}/thumb.jpg", "no-cache"),
    ],
    ids=["playlist-short", "segment-immutable", "vod-file-as-written", "unset-defaults-no-cache"],
)
async def test_cache_control_comes_from_the_writer(
    client: httpx.AsyncClient, store: CountingStore, url: str, cache_control: str
) -> None:
    fill(store)
    response = await client.get(url)
    assert response.headers["cache-control"] == cache_control


async def test_etag_revalidation_answers_304(
    client: httpx.AsyncClient, store: CountingStore
) -> None:
    fill(store)
    first = await client.get("/live/demo/master.m3u8")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get("/live/demo/master.m3u8", headers={"if-none-match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == PLAYLIST_CC
    stale = await client.get("/live/demo/master.m3u8", headers={"if-none-match": '"old"'})
    assert stale.status_code == 200


async def test_head_sends_headers_only(client: httpx.AsyncClient, store: CountingStore) -> None:
    fill(store)
    response = await client.head(f"/live/demo/720p30/{STREAM}/000042.ts")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(188 * 4)
    assert response.headers["content-type"] == "video/mp2t"


async def test_preflight_allows_range_from_any_origin(
    client: httpx.AsyncClient, store: CountingStore
) -> None:
    response = await client.options(
        f"/vod/{STREAM}/recording.mp4",
        headers={"origin": "https://elsewhere.example", "access-control-request-method": "GET"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "Range" in response.headers["access-control-allow-headers"]
    assert store.gets == []


RANGE_CASES = [
    ("bytes=0-99", 206, "bytes 0-99/10240", MP4_BODY[:100]),
    ("bytes=10000-", 206, "bytes 10000-10239/10240", MP4_BODY[10000:]),
    ("bytes=-10", 206, "bytes 10230-10239/10240", MP4_BODY[-10:]),
    ("bytes=10200-99999", 206, "bytes 10200-10239/10240", MP4_BODY[10200:]),
    ("bytes=-99999", 206, "bytes 0-10239/10240", MP4_BODY),
    ("bytes=10240-", 416, "bytes */10240", b""),
    ("bytes=-0", 416, "bytes */10240", b""),
    ("bytes=5-1", 200, None, MP4_BODY),
    ("bytes=0-1,5-6", 200, None, MP4_BODY),
    ("items=0-1", 200, None, MP4_BODY),
    ("bytes=abc", 200, None, MP4_BODY),
]
RANGE_IDS = [
    "first-100",
    "open-ended",
    "suffix",
    "last-clamped",
    "suffix-longer-than-body",
    "start-past-end",
    "empty-suffix",
    "reversed-ignored",
    "multi-range-ignored",
    "other-unit-ignored",
    "garbage-ignored",
]


@pytest.mark.parametrize(
    ("range_header", "status", "content_range", "body"), RANGE_CASES, ids=RANGE_IDS
)
async def test_byte_ranges_on_vod_files(
    client: httpx.AsyncClient,
    store: CountingStore,
    range_header: str,
    status: int,
    content_range: str | None,
    body: bytes,
) -> None:
    fill(store)
    response = await client.get(f"/vod/{STREAM}/recording.mp4", headers={"range": range_header})
    assert response.status_code == status
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers.get("content-range") == content_range
    assert response.content == body
    if status == 206:
        assert response.headers["content-length"] == str(len(body))


@pytest.mark.parametrize(
    ("range_header", "status", "content_range", "body"), RANGE_CASES, ids=RANGE_IDS
)
async def test_byte_ranges_on_a_vod_file_too_large_for_the_cache(
    store: CountingStore,
    monkeypatch: pytest.MonkeyPatch,
    range_header: str,
    status: int,
    content_range: str | None,
    body: bytes,
) -> None:
    """The same answers when the MP4 is larger than the cache takes: read from the store in
    ranged reads (here 3000 bytes each, so a whole GET spans four), never loaded whole."""
    monkeypatch.setattr(hls, "LARGE_READ_BYTES", 3000)
    fill(store)
    app = create_app(store, cache_config=CacheConfig(max_object_bytes=4096))
    url = f"/vod/{STREAM}/recording.mp4"
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://onair.test") as client,
    ):
        response = await client.get(url, headers={"range": range_header})
        head = await client.head(url, headers={"range": range_header})
        etag = response.headers["etag"]
        unchanged = await client.get(url, headers={"if-none-match": etag})
    assert f"vod/{STREAM}/recording.mp4" not in store.gets, "never read whole"
    assert response.status_code == status
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers.get("content-range") == content_range
    assert response.content == body
    if status != 416:
        assert response.headers["content-length"] == str(len(body))
        assert head.status_code == status
        assert head.headers["content-length"] == str(len(body))
    assert etag == f'"{store.get(f"vod/{STREAM}/recording.mp4").etag}"'
    assert unchanged.status_code == 304


async def test_if_range_with_another_etag_sends_everything(
    client: httpx.AsyncClient, store: CountingStore
) -> None:
    fill(store)
    url = f"/vod/{STREAM}/recording.mp4"
    etag = (await client.get(url)).headers["etag"]
    same = await client.get(url, headers={"range": "bytes=0-9", "if-range": etag})
    other = await client.get(url, headers={"range": "bytes=0-9", "if-range": '"changed"'})
    assert (same.status_code, len(same.content)) == (206, 10)
    assert (other.status_code, len(other.content)) == (200, len(MP4_BODY))


async def test_segments_ignore_range(client: httpx.AsyncClient, store: CountingStore) -> None:
    fill(store)
    response = await client.get(
        f"/live/demo/720p30/{STREAM}/000042.ts", headers={"range": "bytes=0-9"}
    )
    assert response.status_code == 200
    assert "accept-ranges" not in response.headers


async def test_missing_object_is_404_with_cors(
    client: httpx.AsyncClient, store: CountingStore
) -> None:
    response = await client.get("/live/nobody/master.m3u8")
    assert response.status_code == 404
    assert response.headers["access-control-allow-origin"] == "*"
    assert store.gets == ["live/nobody/master.m3u8"]


BAD_TARGETS = [
    b"/live/Demo/master.m3u8",
    b"/live/" + b"a" * 33 + b"/master.m3u8",
    b"/live/demo/720p/index.m3u8",
    b"/live/demo/hd/index.m3u8",
    b"/live/demo/720p30/s1/12a.ts",
    b"/live/demo/720p30/s1/" + b"1" * 13 + b".ts",
    b"/live/demo/720p30/../000001.ts",
    b"/live/demo/720p30/./000001.ts",
    b"/live/demo/720p30/s%201/000001.ts",
    b"/live/demo/720p30/%2e%2e/000001.ts",
    b"/live/demo/720p30/%2E%2E/000001.ts",
    b"/live/demo/720p30/a%2fb/000001.ts",
    b"/live/demo/720p30/a%2Fb/000001.ts",
    b"/live/demo/720p30/a%5cb/000001.ts",
    b"/live/demo/%2e%2e/%2e%2e/secret/index.m3u8",
    b"/live/../streams/s1/720p30/000001.ts",
    b"/vod/../master.m3u8",
    b"/vod/%2e%2e/master.m3u8",
    b"/vod/s1/..%2f..%2fetc%2fpasswd",
    b"/vod/s1/passwd",
    b"/vod/s1/run.sh",
    b"/vod/s1/.hidden.mp4",
    b"/vod/s1/recording.mp4.meta",
    b"/vod/" + b"s" * 81 + b"/master.m3u8",
    b"/vod/s1/720p30/000001.ts.meta",
    b"/vod/s1/720p30/000001.2.m4s",
    b"/vod/s1/720p30/init-0123.mp4",
    b"/vod/s1/720p30/recording.mp4",
    b"/streams/s1/720p30/000001.ts",
    b"/live/demo/master.m3u8x",
]
BAD_IDS = [
    "channel-uppercase",
    "channel-too-long",
    "rendition-without-fps",
    "rendition-free-text",
    "seq-not-digits",
    "seq-too-long",
    "dotdot-stream",
    "dot-stream",
    "encoded-space",
    "encoded-dotdot",
    "encoded-dotdot-upper",
    "encoded-slash",
    "encoded-slash-upper",
    "encoded-backslash",
    "encoded-dotdot-twice",
    "dotdot-channel",
    "vod-dotdot",
    "vod-encoded-dotdot",
    "vod-encoded-traversal",
    "vod-no-extension",
    "vod-bad-extension",
    "vod-hidden-file",
    "vod-sidecar-meta",
    "stream-id-too-long",
    "segment-sidecar-meta",
    "vod-cmaf-part-not-listed",
    "vod-init-short-digest",
    "vod-rendition-file",
    "store-layout-not-routed",
    "suffix-after-extension",
]


@pytest.mark.parametrize("target", BAD_TARGETS, ids=BAD_IDS)
async def test_bad_paths_are_404_and_never_reach_the_store(
    app: Starlette, store: CountingStore, target: bytes
) -> None:
    # Objects a traversal could reach if it got through.
    fill(store)
    put_segment(store, "streams/s1/720p30/000001.ts", b"x")
    put_playlist(store, "secret/index.m3u8", "#EXTM3U\n")
    store.gets.clear()
    status, _body = await raw_get(app, target)
    assert status == 404
    assert store.gets == []


async def test_valid_raw_target_reaches_the_store(app: Starlette, store: CountingStore) -> None:
    put_segment(store, "streams/s1/720p30/000001.ts", b"x")
    status, body = await raw_get(app, b"/live/demo/720p30/s1/000001.ts")
    assert (status, body) == (200, b"x")


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 1, (0, 0)),
        ("BYTES=1-2", 5, (1, 2)),
        (" bytes=1- ", 5, (1, 4)),
        ("bytes=-", 5, None),
        ("bytes=" + "9" * 20 + "-", 5, None),
    ],
    ids=["one-byte", "unit-case-insensitive", "whitespace", "empty-both", "absurd-number"],
)
def test_parse_range(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


def test_parse_range_on_empty_body_is_unsatisfiable() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-5", 0)


def test_etag_matches() -> None:
    assert etag_matches('"a"', '"a"')
    assert etag_matches('W/"a"', '"a"')
    assert etag_matches(' "b" , "a" ', '"a"')
    assert not etag_matches('"b"', '"a"')
    assert not etag_matches("a", '"a"')
