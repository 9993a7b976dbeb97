"""The REST API on the real broker: channels, keys, admin auth, the OpenAPI document; the
gateway's /healthz and /metrics while one of its followers restarts."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Message

from gateway.http.serve import build_app
from pipeline.channels import hash_stream_key
from pipeline.settings import Settings
from schemas.codec import Codec
from topics.admin import ensure_topics
from topics.client import CheckedProducer
from topics.specs import STREAMS, all_topics
from topics.table import TableReader

pytestmark = pytest.mark.integration

ADMIN = "test-admin-token"


@pytest.fixture
def settings(tmp_path: Path, kafka_bootstrap: str) -> Settings:
    ensure_topics(kafka_bootstrap, all_topics())
    return Settings.from_env(
        {
            "ONAIR_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "ONAIR_STATE_DIR": str(tmp_path / "state"),
            "ONAIR_STORAGE_URL": str(tmp_path / "store"),
            "ONAIR_ADMIN_TOKEN": ADMIN,
        }
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://onair.test") as http,
    ):
        yield http


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


async def test_create_requires_the_admin_token(client: httpx.AsyncClient) -> None:
    name = f"api_{uuid.uuid4().hex[:8]}"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = await client.post("/api/channels", json={"name": name}, headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]
    assert (await client.get(f"/api/channels/{name}")).status_code == 404


async def test_create_rotate_and_read_a_channel(client: httpx.AsyncClient) -> None:
    name = f"api_{uuid.uuid4().hex[:8]}"
    created = await client.post("/api/channels", json={"name": name}, headers=_admin())
    assert created.status_code == 201
    body = created.json()
    key = body["stream_key"]
    assert body["playback_url"].endswith(f"/live/{name}/master.m3u8")
    assert body["rtmp_url"].startswith("rtmp://")
    again = await client.post("/api/channels", json={"name": name}, headers=_admin())
    assert again.status_code == 400

    rotated = await client.post(f"/api/channels/{name}/rotate-key", headers=_admin())
    assert rotated.status_code == 200 and rotated.json()["stream_key"] != key
    channel = (await client.get(f"/api/channels/{name}")).json()
    assert channel["key_version"] == 2
    assert "stream_key" not in channel and hash_stream_key(key) not in str(channel)
    names = [c["channel"] for c in (await client.get("/api/channels")).json()]
    assert name in names


@pytest.mark.parametrize(
    "body",
    [{"name": "Bad Name"}, {"name": "x" * 33}, {}, ["demo"]],
    ids=["spaces", "too-long", "missing", "not-an-object"],
)
async def test_bad_channel_names_are_refused(client: httpx.AsyncClient, body: object) -> None:
    response = await client.post("/api/channels", json=body, headers=_admin())
    assert response.status_code == 400


async def test_title_change_on_a_live_channel_marks_a_stream_update(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    name = f"api_{uuid.uuid4().hex[:8]}"
    await client.post("/api/channels", json={"name": name}, headers=_admin())
    codec = Codec()
    CheckedProducer(settings.kafka_bootstrap).send(
        STREAMS,
        name,
        codec.encode(
            "StreamStarted",
            {
                "stream_id": f"{name}-s",
                "channel": name,
                "started_ms": 1,
                "width": 1280,
                "height": 720,
                "fps": 30.0,
                "renditions": ["720p30"],
            },
        ),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        live = (await client.get("/api/streams")).json()
        if any(s["channel"] == name for s in live):
            break
        await asyncio.sleep(0.1)
    response = await client.patch(
        f"/api/channels/{name}",
        json={"title": "speedrun", "category": "games"},
        headers=_admin(),
    )
    assert response.status_code == 200
    while time.monotonic() < deadline:
        live = {s["channel"]: s for s in (await client.get("/api/streams")).json()}
        if live.get(name, {}).get("title") == "speedrun":
            break
        await asyncio.sleep(0.1)
    assert live[name]["stream_id"] == f"{name}-s" and live[name]["category"] == "games"


async def test_a_lone_surrogate_or_an_oversized_body_is_a_clear_400_or_413(
    client: httpx.AsyncClient,
) -> None:
    """`"\\ud800"` parses as JSON but cannot be stored: refused with a 400 before anything is
    written (it was a 500), and the channel reads as before; a huge body is a 413."""
    name = f"api_{uuid.uuid4().hex[:8]}"
    await client.post("/api/channels", json={"name": name}, headers=_admin())
    headers = {**_admin(), "content-type": "application/json"}
    for field in ("title", "category"):
        response = await client.patch(
            f"/api/channels/{name}", content=f'{{"{field}": "\\ud800"}}', headers=headers
        )
        assert response.status_code == 400, field
        assert response.json()["error"] == "bad_request"
    created = await client.post("/api/channels", content='{"name": "\\udfff"}', headers=headers)
    assert created.status_code == 400
    channel = await client.get(f"/api/channels/{name}")
    assert channel.status_code == 200 and channel.json()["title"] is None
    huge = await client.patch(
        f"/api/channels/{name}", content=b"{" + b" " * (64 * 1024) + b"}", headers=headers
    )
    assert huge.status_code == 413


async def test_openapi_document_describes_the_api(client: httpx.AsyncClient) -> None:
    document = (await client.get("/api/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert {"/api/channels", "/api/channels/{name}/rotate-key"} <= set(document["paths"])


async def _until(
    what: str, get: Callable[[], Awaitable[httpx.Response]], ok: Callable[[httpx.Response], bool]
) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        response = await get()
        if ok(response):
            return response
        assert time.monotonic() < deadline, f"{what}: still {response.status_code} {response.text}"
        await asyncio.sleep(0.05)


def _follower_sample(metrics: str, name: str, follower: str) -> float:
    pattern = rf'^{name}{{follower="{re.escape(follower)}"}} (\S+)$'
    match = re.search(pattern, metrics, re.MULTILINE)
    assert match is not None, f"no {name} for {follower}"
    return float(match.group(1))


async def test_healthz_is_degraded_naming_a_table_while_its_follower_restarts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of onair.streams that fails to apply restarts the gateway's streams table:
    /healthz answers 503 naming it (and /metrics counts the restarts) until the record is
    applied, then 200 again, and the record is not lost."""
    poison = f"api_{uuid.uuid4().hex[:8]}"
    healed = threading.Event()
    apply_batch = TableReader._apply_batch

    def failing(table: TableReader, messages: list[Message]) -> None:
        if not healed.is_set() and any(m.key() == poison.encode() for m in messages):
            raise RuntimeError("boom on the poison record")
        apply_batch(table, messages)

    monkeypatch.setattr(TableReader, "_apply_batch", failing)
    app = build_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://onair.test") as http,
    ):
        ready = await http.get("/healthz")
        assert (ready.status_code, ready.text) == (200, "ok\n")
        record = {"stream_id": f"{poison}-s", "channel": poison, "updated_ms": 1, "title": "t"}
        CheckedProducer(settings.kafka_bootstrap).send(
            STREAMS, poison, Codec().encode("StreamUpdated", record)
        )
        down = await _until("healthz", lambda: http.get("/healthz"), lambda r: r.status_code == 503)
        assert down.text.startswith("degraded: table:onair.streams: restarting for "), down.text
        assert "last error: RuntimeError: boom on the poison record" in down.text
        metrics = (await http.get("/metrics")).text
        streams = "table:onair.streams"
        assert _follower_sample(metrics, "onair_follower_restarts_total", streams) >= 1
        assert _follower_sample(metrics, "onair_follower_up", streams) == 0
        assert _follower_sample(metrics, "onair_follower_up", "chat-moderation") == 1
        healed.set()
        await _until("healthz", lambda: http.get("/healthz"), lambda r: r.text == "ok\n")
        live = (await http.get("/api/streams")).json()
        assert any(s["channel"] == poison for s in live)
        metrics = (await http.get("/metrics")).text
        assert _follower_sample(metrics, "onair_follower_up", streams) == 1
