"""Live chat on the HTTP gateway: one `ChatService` per chat server owns the chat producer,
the followers, the fan-out hub and the history readers, from `start()` to `stop()`.

    viewer ──ws──▶ /chat/<channel> ──▶ ChatRules (ban, text, slow mode, duplicate, rate)
                                        │ accepted only
                                        ▼
                                   onair.chat (key = channel, idempotent producer, murmur2)
                                        │
                 every chat server ◀────┘  PartitionFollower ▶ FanoutHub ▶ ClientOutbox ▶ viewer

Moderation actions are produced to the compacted `onair.moderation` topic and applied by every
chat server as its `ModerationFollower` reads them (and at once by the server that took the
request). History is read back from `onair.chat` with `offsets_for_times` (`history.py`).

The integrator creates one `ChatService`, awaits `start()` in the app's lifespan (after
`ensure_topics`), mounts `routes()` (the WebSocket of `protocol.py`, the REST endpoints of
`routes.py`), and awaits `stop()` on shutdown. Given a `Health`, both followers are watched
by it (`chat`, `chat-moderation`: `/healthz` says `degraded` while one restarts); given a
`Registry`, their `onair_follower_*` metrics go to it. `fanout="local"` skips Kafka entirely (each
server broadcasts to its own viewers): the benchmark's reference.
The frame reference is `docs/chat.md`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaException
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from gateway.chat.fanout import FanoutHub, OutboxLimits
from gateway.chat.followers import ModerationFollower, PartitionFollower
from gateway.chat.frames import dumps, message_json, notice_frame
from gateway.chat.history import HistoryPage, HistoryReader
from gateway.chat.partitioner import PARTITIONER, partition_for
from gateway.chat.protocol import ChatProtocol
from gateway.chat.routes import ChatApi, openapi_paths
from pipeline.chat import ChatLimits, ChatRules, ModerationAction, ModerationState
from pipeline.errors import CodecError
from pipeline.health import Health
from pipeline.metrics import Counter as MetricCounter
from pipeline.metrics import Registry
from pipeline.tokens import DEFAULT_TTL_S
from schemas.codec import Codec
from topics.admin import admin_client
from topics.client import AsyncProducer
from topics.follower import Follower
from topics.specs import CHAT, MODERATION

logger = logging.getLogger(__name__)

SEND_TIMEOUT_MS = 10_000


@dataclass(frozen=True, slots=True)
class ChatConfig:
    limits: ChatLimits = field(default_factory=ChatLimits)
    outbox: OutboxLimits = field(default_factory=OutboxLimits)
    coalesce_ms: int = 50
    max_frame_chars: int = 16 * 1024  # bigger text frames get `frame_too_large`
    max_body_bytes: int = 16 * 1024  # REST bodies (moderation, tokens); bigger: 413
    frames_per_s: float = 20.0  # inbound frames per connection before `flood` closes it
    frames_burst: float = 40.0
    history_default_limit: int = 100
    history_max_limit: int = 1000
    history_max_scan: int = 50_000  # records read per history request, at most
    history_readers: int = 2  # concurrent history reads (one Kafka consumer each)
    unassign_linger_s: float = 10.0
    token_ttl_s: int = DEFAULT_TTL_S
    fanout: Literal["kafka", "local"] = "kafka"


class ChatService:
    """Owns the chat producer, the partition follower, the moderation follower, the fan-out
    hub and the history readers of one chat server."""

    def __init__(
        self,
        *,
        kafka_bootstrap: str,
        token_secret: str,
        admin_token: str,
        config: ChatConfig | None = None,
        server_id: str | None = None,
        channel_exists: Callable[[str], bool] | None = None,
        registry: Registry | None = None,
        health: Health | None = None,
    ) -> None:
        self.bootstrap = kafka_bootstrap
        self._registry = registry
        self._health = health
        self.config = config or ChatConfig()
        self.server_id = server_id or f"{socket.gethostname()}:{os.getpid()}"
        self.codec = Codec()
        self.moderation = ModerationState()
        self.rules = ChatRules(self.config.limits, self.moderation)
        self.stats: Counter[str] = Counter()
        self._events: MetricCounter | None = None
        if registry is not None:
            self._events = registry.counter(
                "onair_chat_events_total", "Chat events on this server.", ("event",)
            )
            registry.gauge("onair_chat_connections", "Open chat WebSockets.").set_function(
                lambda: float(self.hub.connections)
            )
        self.partitions = 1
        self.hub = FanoutHub(self.config.coalesce_ms / 1000)
        self._producer: AsyncProducer | None = None
        self._follower: PartitionFollower | None = None
        self._moderation_follower: ModerationFollower | None = None
        self._history: HistoryReader | None = None
        self._history_slots = asyncio.Semaphore(self.config.history_readers)
        self._watchdog: asyncio.Task[None] | None = None
        self._protocol = ChatProtocol(self, token_secret, channel_exists)
        self._api = ChatApi(self, token_secret, admin_token)
        self.started = False

    def count(self, event: str, amount: int = 1) -> None:
        """Count `event` in `stats` and in `onair_chat_events_total`."""
        self.stats[event] += amount
        if self._events is not None:
            self._events.labels(event).inc(amount)

    @property
    def kafka(self) -> bool:
        return self.config.fanout == "kafka"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Kafka (topics must exist), read the moderation topic to its end, start
        following. On failure everything started so far is stopped again."""
        try:
            if self.kafka:
                await self._start_kafka()
        except BaseException:
            await self.stop()
            raise
        self._watchdog = asyncio.create_task(self._watch_outboxes())
        self.started = True
        logger.info(
            "chat server %s started (%s fan-out, %d chat partitions)",
            self.server_id,
            self.config.fanout,
            self.partitions,
        )

    async def _start_kafka(self) -> None:
        self.partitions = await asyncio.to_thread(self._chat_partitions)
        self._follower = PartitionFollower(
            self.bootstrap,
            CHAT,
            self._decode_chat,
            self._deliver_chat,
            linger_s=self.config.unassign_linger_s,
            registry=self._registry,
        )
        self._watch(self._follower.follower)
        self.hub.follower, self.hub.partitions = self._follower, self.partitions
        self._follower.start()
        # a chat message that cannot be stored within seconds is refused (`unavailable`), not
        # delivered minutes late
        self._producer = AsyncProducer(
            self.bootstrap, partitioner=PARTITIONER, **{"message.timeout.ms": SEND_TIMEOUT_MS}
        )
        self._moderation_follower = ModerationFollower(
            self.bootstrap, MODERATION, self._on_moderation, registry=self._registry
        )
        self._watch(self._moderation_follower.follower)
        await self._moderation_follower.start()
        self._history = HistoryReader(self.bootstrap, self.codec, self.config.history_max_scan)

    def _watch(self, follower: Follower) -> None:
        if self._health is not None:
            self._health.watch(follower.name, follower.probe)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """A lifespan hook for `create_app(lifespan_hooks=[chat.lifespan])`."""
        del app
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def stop(self) -> None:
        self.started = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self._protocol.end_sessions()
        self.hub.close()
        stoppers: list[Callable[[], None]] = []
        if self._follower is not None:
            stoppers.append(self._follower.stop)
        if self._moderation_follower is not None:
            stoppers.append(self._moderation_follower.stop)
        if self._producer is not None:
            stoppers.append(self._producer.close)
        if self._history is not None:
            stoppers.append(self._history.close)
        for stop in stoppers:
            await asyncio.to_thread(stop)
        logger.info("chat server %s stopped", self.server_id)

    def _chat_partitions(self) -> int:
        topics = admin_client(self.bootstrap).list_topics(CHAT, timeout=15.0).topics
        meta = topics.get(CHAT)
        if meta is None or meta.error is not None or not meta.partitions:
            raise KafkaException(f"topic {CHAT} is missing (run ensure_topics first)")
        return len(meta.partitions)

    async def _watch_outboxes(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for outbox in self.hub.outboxes():
                outbox.check_stalled(now)

    # -- Kafka records ------------------------------------------------------------------------

    def _decode_chat(self, key: bytes | None, value: bytes | None) -> tuple[str, str] | None:
        """On the follower thread: a record → (channel, message JSON), or None to skip."""
        try:
            record = self.codec.expect("ChatMessage", value)
        except CodecError:
            self.count("codec_errors")
            return None
        return str(record["channel"]), dumps(message_json(record))

    def _deliver_chat(self, items: list[tuple[str, str]]) -> None:
        self.hub.publish_many(items)

    def _on_moderation(self, values: list[bytes], replay: bool) -> None:
        for value in values:
            try:
                action = ModerationAction.from_record(self.codec.expect("ModerationAction", value))
            except (CodecError, ValueError, KeyError):
                self.count("codec_errors")
                continue
            self.moderation.apply(action)
            self.count("moderation_applied")
            if not replay:
                self._announce(action)

    def _announce(self, action: ModerationAction) -> None:
        notices = {
            "ban": ("user_banned", f"{action.user} was banned"),
            "timeout": ("user_timed_out", f"{action.user} was timed out for {action.seconds}s"),
            "unban": ("user_unbanned", f"{action.user} may chat again"),
            "delete": ("message_deleted", "a message was deleted"),
            "slow": ("slow_mode", f"slow mode: {action.seconds}s" if action.seconds else "off"),
        }
        code, text = notices[action.action]
        extra: dict[str, Any] = {"channel": action.channel}
        if action.user is not None:
            extra["user"] = action.user
        if action.action == "timeout":
            extra.update(seconds=action.seconds, until_ms=action.until_ms)
        if action.action == "delete":
            extra["id"] = action.message_id
        if action.action == "slow":
            extra["seconds"] = action.seconds
        self.hub.notify(action.channel, notice_frame(code, text, **extra))

    # -- programmatic API ---------------------------------------------------------------------

    async def publish(self, record: dict[str, Any]) -> None:
        """An accepted `ChatMessage` record to its channel's viewers: stored in `onair.chat`
        (every chat server's follower delivers it), or with the local fan-out handed to this
        server's hub. Raises what the producer raises when the message was not stored."""
        if self._producer is not None:
            value = self.codec.encode("ChatMessage", record)
            await self._producer.send(CHAT, record["channel"], value)
        else:
            self.hub.publish(record["channel"], dumps(message_json(record)))

    async def moderate(self, action: ModerationAction) -> ModerationAction:
        """Store `action` in the moderation topic (durably) and apply it here at once; every
        other chat server applies it when its follower reads it."""
        if self._producer is not None:
            value = self.codec.encode("ModerationAction", action.to_record())
            await self._producer.send(MODERATION, action.key, value)
        else:
            self._announce(action)
        self.moderation.apply(action)
        self.count(f"moderation_{action.action}")
        logger.info(
            "moderation %s channel=%s by %s", action.action, action.channel, action.moderator
        )
        return action

    async def history(
        self, channel: str, since_ms: int | None, until_ms: int | None, limit: int
    ) -> HistoryPage:
        if self._history is None:
            raise KafkaException("history needs the Kafka fan-out")
        until = int(time.time() * 1000) if until_ms is None else until_ms
        partition = partition_for(channel.encode(), self.partitions)
        reader = self._history

        def hidden(record: dict[str, Any]) -> bool:
            return self.moderation.hides(
                channel, str(record["id"]), str(record["user"]), int(record["sent_ms"])
            )

        async with self._history_slots:
            return await asyncio.to_thread(
                reader.read, channel, partition, since_ms, until, limit, hidden
            )

    # -- routes -------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [*self._protocol.routes(), *self._api.routes()]

    def openapi_paths(self) -> dict[str, Any]:
        """OpenAPI 3 `paths` for the chat endpoints, for the app's `/api/openapi.json`."""
        return openapi_paths()


__all__ = ["ChatConfig", "ChatService"]
