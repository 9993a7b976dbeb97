"""The HTTP gateway's factory: one Starlette app that other parts extend.

    app = create_app(
        store,
        extra_routes=[*chat.routes, *api.routes],       # tried before the built-in routes
        lifespan_hooks=[chat.lifespan, api.lifespan],   # entered in order, left in reverse
        player_scripts=["/chat/static/chat.js"],        # loaded by the player pages
        vod_lookup=vods.table.get,                      # VOD pages replay the stream's chat
    )

A lifespan hook is what Starlette itself takes as `lifespan`: a callable that receives the
app and returns an async context manager (typically an `@asynccontextmanager` function); it
starts its producers/consumers on enter, stops them on exit, and may stash what handlers need
on `app.state`. The app carries `app.state.store`, `.cache`, `.registry` (the metrics
registry every part adds its metrics to; `/metrics` renders it), `.fast_lane` (the origin's
cache hits, which the HTTP/1.1 listener answers before the app) and `.health`: given a
`pipeline.health.Health`, `/healthz` answers what it renders (503 `degraded: <follower>: …`
while a watched follower restarts); without one, a plain 200 `ok` once the app serves.

Domain errors become responses in one place: `NotFound`/`ObjectNotFound` → 404,
`AuthError` → 403, another `StoreError` → 503 (the store failed, not the client), any other
`OnairError` → 400; under `/api/` as JSON `{"error": code, "message": text}`, elsewhere as
plain text. A 5xx says only its status and a request id (also in `X-Request-Id`); the detail
goes to the log line with that id.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from http import HTTPStatus

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.http.mw_metrics import MetricsMiddleware
from gateway.http.player import PlayerPages, VodLookup
from gateway.origin.cache import CacheConfig, ObjectCache
from gateway.origin.hls import FastLane, FastLaneAsgi, HlsOrigin, PartWaiter
from pipeline import metrics
from pipeline.errors import (
    AuthError,
    BodyTooLarge,
    NotFound,
    ObjectNotFound,
    OnairError,
    StoreError,
)
from pipeline.health import Health
from pipeline.metrics import Registry
from pipeline.store import ObjectStore

logger = logging.getLogger(__name__)

LifespanHook = Callable[[Starlette], AbstractAsyncContextManager[None]]

API_PREFIX = "/api/"


def create_app(
    store: ObjectStore,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    lifespan_hooks: Sequence[LifespanHook] = (),
    middleware: Sequence[Middleware] = (),
    registry: Registry | None = None,
    cache_config: CacheConfig | None = None,
    player_scripts: Sequence[str] = (),
    health: Health | None = None,
    vod_lookup: VodLookup | None = None,
    part_waiter: PartWaiter | None = None,
    low_latency: bool = False,
    debug: bool = False,
) -> Starlette:
    registry = registry if registry is not None else Registry()
    cache = ObjectCache(store, cache_config, registry=registry)
    origin = HlsOrigin(cache, part_waiter)
    lane = FastLane(origin)
    pages = PlayerPages(
        extra_scripts=player_scripts, vod_lookup=vod_lookup, low_latency=low_latency
    )

    async def render_metrics(request: Request) -> Response:
        del request
        return Response(registry.render(), media_type=metrics.CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        del request
        headers = {"cache-control": "no-store"}
        if health is None:
            return PlainTextResponse("ok", headers=headers)
        status, text = health.render()
        return PlainTextResponse(text, status_code=status, headers=headers)

    routes: list[BaseRoute] = [
        *extra_routes,
        *origin.routes,
        *pages.routes,
        Route("/metrics", render_metrics, methods=["GET"], name="metrics"),
        Route("/healthz", healthz, methods=["GET"], name="health"),
    ]
    hooks = tuple(lifespan_hooks)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for hook in hooks:
                await stack.enter_async_context(hook(app))
            logger.info("http gateway started with %d lifespan hooks", len(hooks))
            yield
        logger.info("http gateway stopped")

    app = Starlette(
        debug=debug,
        routes=routes,
        middleware=[
            Middleware(MetricsMiddleware, registry=registry),
            Middleware(FastLaneAsgi, lane=lane),
            *middleware,
        ],
        exception_handlers={OnairError: onair_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.cache = cache
    app.state.registry = registry
    app.state.health = health
    app.state.fast_lane = lane  # the HTTP/1.1 listener answers cache hits with it (listen.py)
    return app


def error_code(exc: Exception) -> str:
    """`ObjectNotFound` → `object_not_found`: the class name in snake case."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def status_for(exc: OnairError) -> int:
    if isinstance(exc, NotFound | ObjectNotFound):
        return 404
    if isinstance(exc, AuthError):
        return 403
    if isinstance(exc, StoreError):
        return 503
    if isinstance(exc, BodyTooLarge):
        return 413
    return 400


async def onair_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OnairError)
    status = status_for(exc)
    if status >= 500:
        # the detail (a store's endpoint, bucket, key) is for the log; the client gets a
        # generic answer and the id that finds the log line
        request_id = secrets.token_hex(8)
        logger.error(
            "%s %s failed (request %s): %s", request.method, request.url.path, request_id, exc
        )
        message = f"{HTTPStatus(status).phrase}; request id {request_id}"
        headers = {"x-request-id": request_id, "cache-control": "no-store"}
        if request.url.path.startswith(API_PREFIX):
            body = {"error": error_code(exc), "message": message, "request_id": request_id}
            return JSONResponse(body, status_code=status, headers=headers)
        return PlainTextResponse(message, status_code=status, headers=headers)
    message = str(exc) or HTTPStatus(status).phrase
    if request.url.path.startswith(API_PREFIX):
        return JSONResponse({"error": error_code(exc), "message": message}, status_code=status)
    if status == 404:
        message = "Not Found"  # object keys and lookups stay internal outside the API
    return PlainTextResponse(message, status_code=status)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405/…: JSON under /api/, Starlette's plain text elsewhere."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    if request.url.path.startswith(API_PREFIX):
        code = re.sub(r"[^a-z0-9]+", "_", exc.detail.lower()).strip("_") or "error"
        body = {"error": code, "message": exc.detail}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
