"""create_app as a composition point: extra routes, lifespan hooks, one error handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.http.app import create_app, error_code
from objectstore.local import LocalStore
from pipeline.errors import (
    AuthError,
    ConfigError,
    FlvError,
    NotFound,
    ObjectNotFound,
    OnairError,
    StoreError,
)
from pipeline.health import Health
from pipeline.metrics import Registry
from pipeline.store import StoredObject

ERRORS: dict[str, OnairError] = {
    "not-found": NotFound("no channel called zed"),
    "object-not-found": ObjectNotFound("live/zed/master.m3u8"),
    "auth": AuthError("token refused"),
    "store": StoreError("bucket unreachable"),
    "config": ConfigError("ONAIR_X", "bad"),
    "protocol": FlvError("bad tag"),
}


def raising(request: Request) -> Response:
    raise ERRORS[request.path_params["name"]]


def make_app(tmp_path: Path, **kwargs: object) -> Starlette:
    routes = [
        Route("/api/boom/{name}", raising),
        Route("/boom/{name}", raising),
    ]
    return create_app(LocalStore(tmp_path), extra_routes=routes, **kwargs)  # type: ignore[arg-type]


async def call(app: Starlette, method: str, url: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://onair.test") as client:
        return await client.request(method, url)


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("not-found", 404, "not_found"),
        ("object-not-found", 404, "object_not_found"),
        ("auth", 403, "auth_error"),
        ("store", 503, "store_error"),
        ("config", 400, "config_error"),
        ("protocol", 400, "flv_error"),
    ],
    ids=["not-found", "object-not-found", "auth", "store", "config", "protocol"],
)
async def test_domain_errors_map_to_status(
    tmp_path: Path, name: str, status: int, code: str
) -> None:
    app = make_app(tmp_path)
    api = await call(app, "GET", f"/api/boom/{name}")
    assert api.status_code == status
    page = await call(app, "GET", f"/boom/{name}")
    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/plain")
    if status >= 500:  # the detail stays in the log: a generic text and a request id
        request_id = api.headers["x-request-id"]
        assert api.json() == {
            "error": code,
            "message": f"Service Unavailable; request id {request_id}",
            "request_id": request_id,
        }
        assert page.text == f"Service Unavailable; request id {page.headers['x-request-id']}"
        return
    assert api.json() == {"error": code, "message": str(ERRORS[name])}
    assert page.text == ("Not Found" if status == 404 else str(ERRORS[name]))


class FailingStore(LocalStore):
    def get(self, key: str) -> StoredObject:
        raise StoreError(
            f"get {key}: Could not connect to the endpoint URL: "
            "http://10.1.2.3:9000/internal-bucket/streams/x"
        )


async def test_a_store_failure_tells_viewers_nothing_internal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(FailingStore(tmp_path))
    response = await call(app, "GET", "/live/demo/master.m3u8")
    assert response.status_code == 503
    assert "10.1.2.3" not in response.text and "internal-bucket" not in response.text
    assert "live/demo" not in response.text
    request_id = response.headers["x-request-id"]
    assert request_id in response.text
    logged = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert logged and "internal-bucket" in logged[0]


async def test_unknown_api_path_is_json_404_elsewhere_plain(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    api = await call(app, "GET", "/api/nope")
    assert api.status_code == 404
    assert api.json() == {"error": "not_found", "message": "Not Found"}
    page = await call(app, "GET", "/nope")
    assert (page.status_code, page.text) == (404, "Not Found")
    wrong_method = await call(app, "POST", "/api/boom/auth")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"


async def test_lifespan_hooks_enter_in_order_and_leave_in_reverse(tmp_path: Path) -> None:
    events: list[str] = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            events.append(f"start {name}")
            setattr(app.state, name, f"{name} ready")
            try:
                yield
            finally:
                events.append(f"stop {name}")

        return lifespan

    async def uses_state(request: Request) -> Response:
        return PlainTextResponse(f"{request.app.state.chat} / {request.app.state.api}")

    app = create_app(
        LocalStore(tmp_path),
        extra_routes=[Route("/api/state", uses_state)],
        lifespan_hooks=[hook("chat"), hook("api")],
    )
    async with app.router.lifespan_context(app):
        assert events == ["start chat", "start api"]
        response = await call(app, "GET", "/api/state")
        assert response.text == "chat ready / api ready"
    assert events == ["start chat", "start api", "stop api", "stop chat"]


async def test_state_and_shared_registry(tmp_path: Path) -> None:
    registry = Registry()
    registry.counter("onair_chat_messages_total", "Chat messages.").inc(5)
    store = LocalStore(tmp_path)
    app = create_app(store, registry=registry)
    assert app.state.store is store
    assert app.state.registry is registry
    text = (await call(app, "GET", "/metrics")).text
    assert "onair_chat_messages_total 5" in text
    assert "onair_http_cache_store_reads_total" in text
    health = await call(app, "GET", "/healthz")
    assert (health.status_code, health.text) == (200, "ok")


async def test_healthz_renders_the_gateway_health_with_its_watched_followers(
    tmp_path: Path,
) -> None:
    health = Health("http")
    problem: list[str | None] = [None]
    health.watch("chat", lambda: problem[0])
    app = create_app(LocalStore(tmp_path), health=health)
    assert app.state.health is health
    starting = await call(app, "GET", "/healthz")
    assert (starting.status_code, starting.text) == (503, "starting: starting up\n")
    health.ok()
    ok = await call(app, "GET", "/healthz")
    assert (ok.status_code, ok.text, ok.headers["cache-control"]) == (200, "ok\n", "no-store")
    problem[0] = "restarting for 1.0 s (1 restarts), last error: RuntimeError: boom"
    degraded = await call(app, "GET", "/healthz")
    assert (degraded.status_code, degraded.text) == (
        503,
        "degraded: chat: restarting for 1.0 s (1 restarts), last error: RuntimeError: boom\n",
    )
    problem[0] = None
    assert (await call(app, "GET", "/healthz")).status_code == 200


def test_error_code() -> None:
    assert error_code(ObjectNotFound("x")) == "object_not_found"
    assert error_code(AuthError("x")) == "auth_error"
