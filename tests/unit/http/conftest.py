"""Fixtures for the HTTP gateway: a real LocalStore in tmp_path and an in-process client."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Message

from gateway.http.app import create_app
from gateway.origin.cache import CacheConfig
from objectstore.local import LocalStore
from pipeline.store import StoredObject

PLAYLIST_CC = "public, max-age=1"
SEGMENT_CC = "public, max-age=31536000, immutable"


class CountingStore(LocalStore):
    """The real LocalStore, counting `get` calls; `gate` (when set) holds every read until
    the test opens it, so concurrent requests provably overlap."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: list[str] = []
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    def get(self, key: str) -> StoredObject:
        with self._lock:
            self.gets.append(key)
        if self.gate is not None and not self.gate.wait(timeout=5):
            raise TimeoutError("the test never opened the gate")
        return super().get(key)

    def count(self, key: str) -> int:
        with self._lock:
            return self.gets.count(key)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store")


@pytest.fixture
def app(store: CountingStore) -> Starlette:
    return create_app(store, cache_config=CacheConfig(ttl_s=0.2, negative_ttl_s=0.2))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://onair.test") as http,
    ):
        yield http


def put_playlist(store: LocalStore, key: str, body: str) -> None:
    store.put(
        key,
        body.encode(),
        content_type="application/vnd.apple.mpegurl",
        cache_control=PLAYLIST_CC,
    )


def put_segment(store: LocalStore, key: str, body: bytes) -> None:
    store.put(key, body, content_type="video/mp2t", cache_control=SEGMENT_CC)


async def raw_get(app: Starlette, raw_target: bytes) -> tuple[int, bytes]:
    """Send a request target byte-for-byte as a server would hand it over (uvicorn unquotes
    `path` and keeps `raw_path`), bypassing the URL normalisation an HTTP client applies."""
    raw_path, _, query = raw_target.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"onair.test")],
        "client": ("127.0.0.1", 50000),
        "server": ("onair.test", 80),
    }
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return int(status), body
