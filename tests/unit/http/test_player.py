"""The player pages and their versioned static assets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from gateway.http.app import create_app
from gateway.http.player import IMMUTABLE, Asset, PlayerPages, load_assets
from objectstore.local import LocalStore


def config_of(page: str) -> dict[str, object]:
    match = re.search(r'<script id="onair-config" type="application/json">(.*?)</script>', page)
    assert match
    value = json.loads(match[1])
    assert isinstance(value, dict)
    return value


async def test_watch_page_plays_the_channel(client: httpx.AsyncClient) -> None:
    response = await client.get("/watch/demo")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    assert config_of(page) == {
        "kind": "live",
        "src": "/live/demo/master.m3u8",
        "channel": "demo",
        "title": "demo",
    }
    assert '<div id="chat" class="chat" data-channel="demo" data-ws-path="/chat/demo">' in page
    assert '<select id="quality"' in page and '<option value="-1">Auto</option>' in page
    assert 'id="live-edge"' in page and 'id="current-level"' in page
    scripts = re.findall(r'<script src="([^"]+)"></script>', page)
    assert [s.split("?")[0] for s in scripts] == [
        "/static/hls.min.js",
        "/static/abr.js",
        "/static/player.js",
    ]
    assert 'id="stats"' in page and 'id="stats-toggle"' in page


async def test_vod_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/vod/demo-1.2_x")
    assert response.status_code == 200
    assert config_of(response.text)["src"] == "/vod/demo-1.2_x/master.m3u8"
    assert config_of(response.text)["kind"] == "vod"


@pytest.mark.parametrize(
    "url",
    [
        "/watch/Demo",
        "/watch/%3Cscript%3E",
        "/watch/a%22b",
        "/watch/" + "a" * 33,
        "/vod/%3Cimg%20src%3Dx%3E",
        "/vod/..",
    ],
    ids=["uppercase", "script-tag", "quote", "too-long", "vod-markup", "vod-dotdot"],
)
async def test_names_outside_the_pattern_are_404(client: httpx.AsyncClient, url: str) -> None:
    response = await client.get(url)
    assert response.status_code == 404
    assert "<" not in response.text


def test_page_escapes_what_it_interpolates(tmp_path: Path) -> None:
    # The routes only admit safe names; the renderer must still not trust its input.
    pages = PlayerPages(assets={}, extra_scripts=['/x.js?a=1&b="2"'])
    hostile = '</script><script>alert("x")</script>&'
    html = bytes(pages.page(title=hostile, kind="live", src="/s", channel=hostile).body).decode()
    assert "<script>alert" not in html
    assert "&lt;/script&gt;" in html
    assert config_of(html)["title"] == hostile
    assert '<script src="/x.js?a=1&amp;b=&quot;2&quot;"></script>' in html


async def test_static_assets_are_versioned_and_cached_long(client: httpx.AsyncClient) -> None:
    page = (await client.get("/watch/demo")).text
    url = re.search(r'src="(/static/player\.js\?v=[0-9a-f]+)"', page)
    assert url
    versioned = await client.get(url[1])
    assert versioned.status_code == 200
    assert versioned.headers["content-type"] == "text/javascript; charset=utf-8"
    assert versioned.headers["cache-control"] == IMMUTABLE
    assert b"onairPlayer" in versioned.content

    unversioned = await client.get("/static/player.js")
    assert unversioned.headers["cache-control"] != IMMUTABLE
    etag = unversioned.headers["etag"]
    again = await client.get("/static/player.js", headers={"if-none-match": etag})
    assert again.status_code == 304

    css = await client.get("/static/player.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    for missing in ("/static/nope.js", "/static/..%2Fplayer.py", "/static/player.py"):
        assert (await client.get(missing)).status_code == 404


def test_load_assets_skips_unknown_types(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text("1")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "Bad Name.js").write_text("x")
    assets = load_assets(tmp_path)
    assert {"a.js"} <= set(assets) <= {"a.js", "hls.min.js"}
    assert isinstance(assets["a.js"], Asset)


async def test_extra_scripts_are_loaded_by_the_pages(tmp_path: Path) -> None:
    app = create_app(LocalStore(tmp_path), player_scripts=["/chat/static/chat.js"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://onair.test") as client:
        page = (await client.get("/watch/demo")).text
    assert page.rstrip().endswith('<script src="/chat/static/chat.js"></script>\n</body>\n</html>')


VOD = {
    "stream_id": "quiz-1700000000000",
    "channel": "quiz",
    "started_ms": 1_700_000_000_000,
    "ended_ms": 1_700_000_600_000,
    "duration_ms": 598_000,
    "renditions": ["360p30"],
    "segment_count": 299,
    "master": "vod/quiz-1700000000000/master.m3u8",
    "status": "complete",
}


async def get_page(tmp_path: Path, url: str) -> httpx.Response:
    app = create_app(
        LocalStore(tmp_path),
        player_scripts=["/static/chat.js"],
        vod_lookup={VOD["stream_id"]: VOD}.get,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://onair.test") as client:
        return await client.get(url)


async def test_vod_page_of_a_catalogued_stream_replays_its_chat(tmp_path: Path) -> None:
    response = await get_page(tmp_path, f"/vod/{VOD['stream_id']}")
    assert response.status_code == 200
    page = response.text
    assert config_of(page) == {
        "kind": "vod",
        "src": f"/vod/{VOD['stream_id']}/master.m3u8",
        "channel": None,  # no live chat: the replay's channel is in `replay`
        "title": VOD["stream_id"],
        "replay": {
            "channel": "quiz",
            "stream_id": VOD["stream_id"],
            "started_ms": 1_700_000_000_000,
            "ended_ms": 1_700_000_600_000,
            "duration_ms": 598_000,
        },
    }
    # the panel is read-only: no WebSocket path for chat.js to connect to
    assert (
        '<div id="chat" class="chat" data-mode="replay" data-channel="quiz"'
        ' aria-label="Chat replay"></div>' in page
    )
    assert "data-ws-path" not in page
    scripts = [s.split("?")[0] for s in re.findall(r'<script src="([^"]+)"></script>', page)]
    assert scripts == [
        "/static/hls.min.js",
        "/static/abr.js",
        "/static/player.js",
        "/static/replay.js",
        "/static/chat_replay.js",
        "/static/chat.js",
    ]


async def test_vod_page_without_a_catalog_record_has_no_replay(tmp_path: Path) -> None:
    page = (await get_page(tmp_path, "/vod/unknown-1")).text
    assert "replay" not in config_of(page)
    assert '<div id="chat" class="chat"></div>' in page
    assert "replay.js" not in page


@pytest.mark.parametrize(
    ("url", "status", "location"),
    [
        ("/watch/vod/quiz-1", 308, "/vod/quiz-1"),
        ("/watch/vod/quiz-1?abr=hlsjs&stats=1", 308, "/vod/quiz-1?abr=hlsjs&stats=1"),
        ("/watch/vod/..", 404, None),
        ("/watch/vod/%3Cb%3E", 404, None),
    ],
    ids=["plain", "query-kept", "dotdot", "markup"],
)
async def test_watch_vod_is_the_vod_pages_other_name(
    tmp_path: Path, url: str, status: int, location: str | None
) -> None:
    response = await get_page(tmp_path, url)
    assert response.status_code == status
    assert response.headers.get("location") == location


async def test_replay_scripts_are_served(client: httpx.AsyncClient) -> None:
    for name, marker in (("replay.js", b"OnairReplay"), ("chat_replay.js", b"onairReplay")):
        response = await client.get(f"/static/{name}")
        assert response.status_code == 200 and marker in response.content
        assert b"innerHTML" not in response.content
