"""The whole HTTP gateway as `onair http` runs it: HLS origin, player, REST API, chat, VODs.

Its `/healthz` is the gateway's `Health` ("http"): 200 `ok` once every lifespan hook has
started, 503 `degraded: <name>: …` while one of its followers restarts — the tables
`table:onair.channels`, `table:onair.streams`, `table:onair.vods` and chat's `chat` and
`chat-moderation`; their `onair_follower_*` metrics are in its `/metrics`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette

from gateway.api.channels import ChannelApi
from gateway.api.vods import VodApi
from gateway.chat.service import ChatConfig, ChatService
from gateway.http.app import create_app
from gateway.origin.lowlatency import LowLatencyOrigin
from objectstore import open_store
from pipeline.chat import ChatLimits
from pipeline.health import Health
from pipeline.llhls import LlConfig
from pipeline.metrics import Registry
from pipeline.settings import Settings
from schemas.codec import Codec
from topics.channels import ChannelDirectory
from topics.client import AsyncProducer
from topics.specs import STREAMS
from topics.table import TableReader


def build_app(
    settings: Settings, registry: Registry | None = None, health: Health | None = None
) -> Starlette:
    registry = registry or Registry()
    health = health or Health("http")
    store = open_store(settings.storage_url, **settings.s3_options())
    channels = ChannelDirectory(settings.kafka_bootstrap, registry=registry)
    streams = TableReader(settings.kafka_bootstrap, STREAMS, None, registry=registry)
    base_url = f"http://{settings.public_host}:{settings.http_port}"

    def urls(channel: str) -> dict[str, str]:
        return {
            "rtmp_url": settings.rtmp_url,
            "playback_url": settings.playback_url(channel),
            "player_url": settings.player_url(channel),
        }

    codec = Codec()
    producer: list[AsyncProducer] = []

    async def stream_updated(channel: str, record: dict[str, Any]) -> None:
        await producer[0].send(STREAMS, channel, codec.encode("StreamUpdated", record))

    chat = ChatService(
        kafka_bootstrap=settings.kafka_bootstrap,
        token_secret=settings.token_secret,
        admin_token=settings.admin_token,
        registry=registry,
        health=health,
        server_id=f"{settings.public_host}:{settings.http_port}",
        config=ChatConfig(
            limits=ChatLimits(
                max_text_chars=settings.chat_max_text_chars,
                max_marks_per_char=settings.chat_max_marks_per_char,
            ),
            max_frame_chars=settings.chat_max_frame_chars,
            frames_per_s=settings.chat_frames_per_s,
            frames_burst=2 * settings.chat_frames_per_s,
            max_body_bytes=settings.http_max_body_bytes,
        ),
    )
    vods = VodApi(settings.kafka_bootstrap, base_url=base_url, registry=registry)
    low_latency = LowLatencyOrigin(
        settings.kafka_bootstrap,
        config=LlConfig(
            part_target_s=settings.part_target_ms / 1000,
            target_duration_s=settings.segment_target_s,
        ),
        window=settings.ll_playlist_window,
        registry=registry,
    )
    for follower in (channels.table.follower, streams.follower, vods.table.follower,
                     low_latency.follower):  # fmt: skip
        health.watch(follower.name, follower.probe)
    api = ChannelApi(
        channels,
        streams,
        settings.admin_token,
        urls,
        extra_paths={**vods.openapi_paths, **chat.openapi_paths()},
        on_stream_update=stream_updated,
        max_body_bytes=settings.http_max_body_bytes,
    )

    @asynccontextmanager
    async def directories(app: Starlette) -> AsyncIterator[None]:
        del app
        await asyncio.gather(asyncio.to_thread(channels.start), asyncio.to_thread(streams.start))
        producer.append(AsyncProducer(settings.kafka_bootstrap))
        try:
            yield
        finally:
            producer.pop().close()
            channels.stop()
            streams.stop()

    @asynccontextmanager
    async def serving(app: Starlette) -> AsyncIterator[None]:
        del app
        health.ok()  # every hook before this one has started: tables read, chat following
        yield

    app = create_app(
        store,
        extra_routes=[*chat.routes(), *vods.routes, *api.routes, *low_latency.routes],
        lifespan_hooks=[directories, chat.lifespan, vods.lifespan, low_latency.lifespan, serving],
        player_scripts=["/static/chat.js"],
        registry=registry,
        health=health,
        vod_lookup=vods.table.get,
        part_waiter=low_latency.wait_for_part,
        low_latency=settings.part_target_ms > 0,
    )
    app.state.ll_origin = low_latency  # the HTTP/1.1 listener parks blocking reloads in it
    return app
