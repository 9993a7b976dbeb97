"""The VOD catalog API, read from the compacted `onair.vods` topic.

    GET /api/vods[?channel=demo&limit=50]   newest first: id, channel, title, times, poster…
    GET /api/vods/{stream_id}               one VOD: every file's URL, chapters with ends

Wiring (gateway/http/serve.py)::

    vods = VodApi(settings.kafka_bootstrap)
    create_app(store, extra_routes=[*vods.routes, ...], lifespan_hooks=[vods.lifespan, ...])
    ChannelApi(..., extra_paths=vods.openapi_paths)   # documented in /api/openapi.json

URLs are origin paths (`/vod/<id>/master.m3u8`, `/vod/<id>/720p30.mp4`, …), prefixed with
`base_url` when one is given.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.api.channels import BadRequest
from pipeline.errors import NotFound
from pipeline.metrics import Registry
from topics.specs import VODS
from topics.table import TableReader

logger = logging.getLogger(__name__)

STREAM_ID = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.\-]{1,80}")
CHANNEL = re.compile(r"[a-z0-9_]{1,32}")
MAX_LIMIT = 500


class VodApi:
    def __init__(
        self,
        bootstrap: str,
        *,
        base_url: str = "",
        table: TableReader | None = None,
        registry: Registry | None = None,
    ) -> None:
        """`registry`: where the catalog table's follower reports (`table.follower` is what
        the gateway's `Health` watches)."""
        if table is None:
            table = TableReader(bootstrap, VODS, "Vod", registry=registry)
        self.table = table
        self.base_url = base_url.rstrip("/")

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/vods", self.list_vods, methods=["GET"], name="api:vods"),
            Route("/api/vods/{stream_id}", self.get_vod, methods=["GET"], name="api:vod"),
        ]

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Read the catalog to its end before serving, follow it while serving."""
        del app
        await asyncio.to_thread(self.table.start)
        try:
            yield
        finally:
            await asyncio.to_thread(self.table.stop)

    def url(self, key: str | None) -> str | None:
        return f"{self.base_url}/{key}" if key else None

    def summary(self, vod: Mapping[str, Any]) -> dict[str, Any]:
        stream_id = vod["stream_id"]
        return {
            "stream_id": stream_id,
            "channel": vod["channel"],
            "title": vod.get("title"),
            "category": vod.get("category"),
            "started_ms": vod["started_ms"],
            "ended_ms": vod["ended_ms"],
            "duration_ms": vod["duration_ms"],
            "status": vod["status"],
            "renditions": vod["renditions"],
            "poster_url": self.url(vod.get("poster")),
            "master_url": self.url(vod["master"]),
            "player_url": f"{self.base_url}/vod/{stream_id}",
        }

    def detail(self, vod: Mapping[str, Any]) -> dict[str, Any]:
        stream_id = vod["stream_id"]
        chapters = vod.get("chapters") or []
        # each chapter ends where the next starts, the last one with the VOD
        ends = [c["start_ms"] for c in chapters[1:]] + [vod["duration_ms"]] if chapters else []
        thumbnails = vod.get("thumbnails")
        return {
            **self.summary(vod),
            "segment_count": vod["segment_count"],
            "discontinuities": vod.get("discontinuities", 0),
            "missing_renditions": vod.get("missing_renditions", []),
            "completed_ms": vod.get("completed_ms", 0),
            "playlists": {
                r: f"{self.base_url}/vod/{stream_id}/{r}/index.m3u8" for r in vod["renditions"]
            },
            "mp4_urls": {r: self.url(key) for r, key in sorted((vod.get("mp4") or {}).items())},
            "thumbnails_vtt_url": self.url(thumbnails),
            "thumbnails_sprite_url": self.url(
                thumbnails.rsplit("/", 1)[0] + "/thumbs.jpg" if thumbnails else None
            ),
            "thumbnail_interval_s": vod.get("thumbnail_interval_s", 0.0),
            "chapters_vtt_url": self.url(vod.get("chapters_vtt")),
            "chapters": [
                {
                    "start_ms": c["start_ms"],
                    "end_ms": end,
                    "title": c.get("title"),
                    "category": c.get("category"),
                }
                for c, end in zip(chapters, ends, strict=True)
            ],
        }

    async def list_vods(self, request: Request) -> Response:
        channel = request.query_params.get("channel")
        if channel is not None and not CHANNEL.fullmatch(channel):
            raise BadRequest("channel must be 1-32 of a-z, 0-9, _")
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            raise BadRequest("limit must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be within 1..{MAX_LIMIT}")
        vods = [
            v for v in self.table.snapshot().values() if channel is None or v["channel"] == channel
        ]
        vods.sort(key=lambda v: (v["started_ms"], v["stream_id"]), reverse=True)
        return JSONResponse([self.summary(v) for v in vods[:limit]])

    async def get_vod(self, request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        vod = self.table.get(stream_id) if STREAM_ID.fullmatch(stream_id) else None
        if vod is None:
            raise NotFound(f"no VOD {stream_id[:80]}")
        return JSONResponse(self.detail(vod))

    @property
    def openapi_paths(self) -> dict[str, Any]:
        error = {"description": "error: {error, message}"}
        return {
            "/api/vods": {
                "get": {
                    "summary": "VODs, newest first",
                    "parameters": [
                        {"name": "channel", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_LIMIT,
                                "default": 50,
                            },
                        },
                    ],
                    "responses": {"200": {"description": "list"}, "400": error},
                }
            },
            "/api/vods/{stream_id}": {
                "get": {
                    "summary": "One VOD: playlists, MP4s, poster, thumbnails, chapters",
                    "parameters": [
                        {
                            "name": "stream_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {"200": {"description": "VOD"}, "404": error},
                }
            },
        }
