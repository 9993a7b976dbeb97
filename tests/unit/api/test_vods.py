"""The VOD catalog API in-process: a real TableReader fed encoded Vod records (no broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.vods import VodApi
from gateway.http.app import create_app
from objectstore.local import LocalStore
from schemas.codec import Codec
from topics.specs import VODS
from topics.table import TableReader


def vod(stream_id: str, channel: str, started_ms: int, **extra: Any) -> dict[str, Any]:
    base = f"vod/{stream_id}"
    return {
        "stream_id": stream_id,
        "channel": channel,
        "started_ms": started_ms,
        "ended_ms": started_ms + 20_000,
        "duration_ms": 20_000,
        "renditions": ["360p30", "160p30"],
        "segment_count": 10,
        "master": f"{base}/master.m3u8",
        "mp4": {"360p30": f"{base}/360p30.mp4", "160p30": f"{base}/160p30.mp4"},
        "poster": f"{base}/poster.jpg",
        "thumbnails": f"{base}/thumbs.vtt",
        "chapters": [
            {"start_ms": 0, "title": "Intro", "category": None},
            {"start_ms": 8_000, "title": "Main", "category": "Games"},
        ],
        "chapters_vtt": f"{base}/chapters.vtt",
        **extra,
    }


@pytest.fixture
def table() -> TableReader:
    reader = TableReader("unused:9092", VODS, "Vod")
    codec = Codec()
    for record in [
        vod("a-20260101T000000Z-0001", "a", 1_000, title="Old"),
        vod("b-20260102T000000Z-0002", "b", 2_000),
        vod("a-20260103T000000Z-0003", "a", 3_000, status="partial"),
        vod("c-20260104T000000Z-0004", "c", 4_000, chapters=[], chapters_vtt=None),
    ]:
        reader._apply(record["stream_id"].encode(), codec.encode("Vod", record))
    return reader


@pytest.fixture
async def client(table: TableReader, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    api = VodApi("unused:9092", base_url="http://example.test:8080", table=table)
    app = create_app(LocalStore(tmp_path), extra_routes=api.routes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_list_is_newest_first_and_filters_by_channel(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/vods")
    assert response.status_code == 200
    assert [v["stream_id"][:1] + str(v["started_ms"]) for v in response.json()] == [
        "c4000",
        "a3000",
        "b2000",
        "a1000",
    ]
    only_a = (await client.get("/api/vods", params={"channel": "a", "limit": "1"})).json()
    assert [v["started_ms"] for v in only_a] == [3000]
    assert only_a[0]["status"] == "partial"
    assert (
        only_a[0]["poster_url"] == "http://example.test:8080/vod/a-20260103T000000Z-0003/poster.jpg"
    )


async def test_one_vod_has_every_url_and_chapter_ends(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/vods/a-20260101T000000Z-0001")).json()
    base = "http://example.test:8080/vod/a-20260101T000000Z-0001"
    assert body["title"] == "Old"
    assert body["master_url"] == f"{base}/master.m3u8"
    assert body["player_url"] == base
    assert body["playlists"]["160p30"] == f"{base}/160p30/index.m3u8"
    assert body["mp4_urls"] == {"160p30": f"{base}/160p30.mp4", "360p30": f"{base}/360p30.mp4"}
    assert body["thumbnails_vtt_url"] == f"{base}/thumbs.vtt"
    assert body["thumbnails_sprite_url"] == f"{base}/thumbs.jpg"
    assert body["chapters"] == [
        {"start_ms": 0, "end_ms": 8_000, "title": "Intro", "category": None},
        {"start_ms": 8_000, "end_ms": 20_000, "title": "Main", "category": "Games"},
    ]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/vods/nope", 404),
        ("/api/vods/has space", 404),
        ("/api/vods?limit=0", 400),
        ("/api/vods?limit=x", 400),
        ("/api/vods?channel=Bad-Name", 400),
    ],
    ids=["unknown", "bad-id", "limit-zero", "limit-text", "bad-channel"],
)
async def test_bad_requests_are_json_errors(
    client: httpx.AsyncClient, path: str, status: int
) -> None:
    response = await client.get(path)
    assert response.status_code == status
    assert set(response.json()) == {"error", "message"}


def test_openapi_paths_document_both_routes(table: TableReader) -> None:
    assert set(VodApi("unused:9092", table=table).openapi_paths) == {
        "/api/vods",
        "/api/vods/{stream_id}",
    }


async def test_a_vod_without_chapters_has_an_empty_chapter_list(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/vods/c-20260104T000000Z-0004")
    assert response.status_code == 200
    assert response.json()["chapters"] == []
