"""The REST API for channels and live streams, under `/api/`, described at
`/api/openapi.json`. Writes need `Authorization: Bearer <admin token>`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.http.body import MAX_BODY_BYTES, read_json_object
from pipeline.admin import admin_authorized
from pipeline.channels import check_channel_name
from pipeline.errors import AuthError, InvalidJson, NotFound, OnairError
from pipeline.streams import live_streams
from topics.channels import ChannelDirectory
from topics.table import TableReader

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class BadRequest(OnairError):
    pass


class ChannelApi:
    def __init__(
        self,
        channels: ChannelDirectory,
        streams: TableReader,
        admin_token: str,
        urls: Callable[[str], dict[str, str]],
        extra_paths: dict[str, Any] | None = None,
        on_stream_update: Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.on_stream_update = on_stream_update
        self.max_body_bytes = max_body_bytes
        self.channels = channels
        self.streams = streams
        self._admin_token = admin_token
        self._urls = urls
        self._extra_paths = extra_paths or {}

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/openapi.json", self.openapi, methods=["GET"]),
            Route("/api/channels", self.list_channels, methods=["GET"]),
            Route("/api/channels", self.admin(self.create_channel), methods=["POST"]),
            Route("/api/channels/{name}", self.get_channel, methods=["GET"]),
            Route("/api/channels/{name}", self.admin(self.update_channel), methods=["PATCH"]),
            Route("/api/channels/{name}/rotate-key", self.admin(self.rotate_key), methods=["POST"]),
            Route("/api/streams", self.list_streams, methods=["GET"]),
        ]

    def admin(self, handler: Handler) -> Handler:
        async def checked(request: Request) -> Response:
            if not admin_authorized(request.headers.get("authorization"), self._admin_token):
                raise AuthError("admin token required")
            return await handler(request)

        return checked

    async def list_channels(self, request: Request) -> Response:
        del request
        live = {s["channel"]: s["stream_id"] for s in live_streams(self.streams.snapshot())}
        return JSONResponse(
            [{"channel": n, "live_stream_id": live.get(n)} for n in self.channels.names()]
        )

    async def get_channel(self, request: Request) -> Response:
        name = request.path_params["name"]
        record = self.channels.get(name)
        if record is None:
            raise NotFound(f"no channel {name[:40]}")
        live = {s["channel"]: s for s in live_streams(self.streams.snapshot())}
        return JSONResponse(
            {
                "channel": name,
                "title": record.get("title"),
                "key_version": record["key_version"],
                "live": live.get(name),
                **self._urls(name),
            }
        )

    async def create_channel(self, request: Request) -> Response:
        try:
            body = await read_json_object(request, self.max_body_bytes)
            name = check_channel_name(str(body["name"]))
        except (InvalidJson, ValueError, KeyError, TypeError):
            raise BadRequest('body must be JSON like {"name": "demo"}') from None
        key = await asyncio.to_thread(self.channels.create, name)
        return JSONResponse({"channel": name, "stream_key": key, **self._urls(name)}, 201)

    async def update_channel(self, request: Request) -> Response:
        """Title and category; when the channel is live, a StreamUpdated event marks a chapter
        in the VOD."""
        name = request.path_params["name"]
        try:
            body = await read_json_object(request, self.max_body_bytes)
        except InvalidJson as exc:
            raise BadRequest(
                f'body must be JSON like {{"title": "…", "category": "…"}} ({exc})'
            ) from None
        title, category = body.get("title"), body.get("category")
        for value in (title, category):
            if value is not None and (not isinstance(value, str) or len(value) > 140):
                raise BadRequest("title and category are strings of at most 140 characters")
        record = await asyncio.to_thread(self.channels.update_info, name, title, category)
        live = {s["channel"]: s for s in live_streams(self.streams.snapshot())}.get(name)
        if live is not None and self.on_stream_update is not None:
            await self.on_stream_update(
                name,
                {
                    "stream_id": live["stream_id"],
                    "channel": name,
                    "updated_ms": record["updated_ms"],
                    "title": title,
                    "category": category,
                },
            )
        return JSONResponse({"channel": name, "title": title, "category": category})

    async def rotate_key(self, request: Request) -> Response:
        name = request.path_params["name"]
        key = await asyncio.to_thread(self.channels.rotate_key, name)
        return JSONResponse({"channel": name, "stream_key": key, **self._urls(name)})

    async def list_streams(self, request: Request) -> Response:
        del request
        return JSONResponse(live_streams(self.streams.snapshot()))

    async def openapi(self, request: Request) -> Response:
        del request
        return JSONResponse(openapi_document(self._extra_paths))


_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
            }
        }
    },
}
_ADMIN: list[dict[str, list[str]]] = [{"admin": []}]
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_KEYED = {
    "200": {"description": "channel, stream_key (shown once), rtmp_url, playback_url"},
    "403": _ERROR,
    "404": _ERROR,
}


def openapi_document(extra_paths: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/channels": {
            "get": {"summary": "List channels", "responses": {"200": {"description": "list"}}},
            "post": {
                "summary": "Create a channel; the stream key is returned once",
                "security": _ADMIN,
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "pattern": "^[a-z0-9_]{1,32}$"}
                                },
                            }
                        }
                    }
                },
                "responses": {"201": _KEYED["200"], "400": _ERROR, "403": _ERROR},
            },
        },
        "/api/channels/{name}": {
            "get": {
                "summary": "One channel",
                "parameters": [_NAME],
                "responses": {"200": {"description": "channel"}, "404": _ERROR},
            },
        },
        "/api/channels/{name}/rotate-key": {
            "post": {
                "summary": "Issue a new stream key",
                "parameters": [_NAME],
                "security": _ADMIN,
                "responses": _KEYED,
            },
        },
        "/api/streams": {
            "get": {"summary": "Live streams", "responses": {"200": {"description": "list"}}},
        },
    }
    paths.update(extra_paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "onair", "version": "0.1.0"},
        "components": {"securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
