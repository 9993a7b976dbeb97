"""ASGI middleware counting HTTP requests by route template and status, with latency.

The route label is the matched route's path template (`/live/{channel}/master.m3u8`), never
the concrete path, so the number of series stays bounded whatever clients ask for; requests
no route matched are labelled `unmatched`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.metrics import Registry

logger = logging.getLogger(__name__)

UNMATCHED = "unmatched"


class RequestMetrics:
    """`onair_http_requests_total` and `onair_http_request_duration_seconds`: what the
    middleware counts, and the HTTP/1.1 listener for the requests it answers itself."""

    def __init__(self, registry: Registry) -> None:
        self.requests = registry.counter(
            "onair_http_requests_total", "HTTP requests by route and status.", ("route", "status")
        )
        self.duration = registry.histogram(
            "onair_http_request_duration_seconds",
            "Time from request to the end of the response, by route.",
            ("route",),
        )

        # (route, status) → its two children: `labels()` on every request cost ~10 µs
        # (bench.origin), most of what an answer from the cache costs
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def count(self, route: str, status: int, seconds: float) -> None:
        children = self._children.get((route, status))
        if children is None:  # route templates and statuses: a bounded set
            children = (self.requests.labels(route, str(status)), self.duration.labels(route))
            self._children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, registry: Registry) -> None:
        self.app = app
        self.metrics = RequestMetrics(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.count(route, status, time.perf_counter() - started)
