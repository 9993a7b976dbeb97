"""Live chat on the HTTP gateway: the WebSocket endpoint, chat history, moderation and the demo
token endpoint, all owned by one `ChatService`.

    viewer ──ws──▶ /chat/<channel> ──▶ ChatRules (ban, text, slow mode, duplicate, rate)
                                        │ accepted only
                                        ▼
                                   onair.chat (key = channel, idempotent producer, murmur2)
                                        │
                 every chat server ◀────┘  PartitionFollower ▶ FanoutHub ▶ ClientOutbox ▶ viewer

Moderation actions are produced to the compacted `onair.moderation` topic and applied by every
chat server as its `ModerationFollower` reads them (and at once by the server that took the
request). History is read back from `onair.chat` with `offsets_for_times` (`chat_history`).

The integrator creates one `ChatService`, awaits `start()` in the app's lifespan (after
`ensure_topics`), mounts `routes()`, and awaits `stop()` on shutdown. `fanout="local"` skips
Kafka entirely (each server broadcasts to its own viewers): the benchmark's reference.
The frame reference is `docs/chat.md`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.http.chat_fanout import (
    ClientOutbox,
    FanoutHub,
    ModerationFollower,
    OutboxLimits,
    PartitionFollower,
    message_json,
    notice_frame,
    partition_for,
)
from gateway.http.chat_history import HistoryPage, HistoryReader
from pipeline.admin import admin_authorized
from pipeline.chat import (
    ChatLimits,
    ChatRules,
    ModerationAction,
    ModerationState,
    Refusal,
    TokenBucket,
    action_from_fields,
    valid_channel,
)
from pipeline.errors import AuthError, CodecError
from pipeline.metrics import Counter as MetricCounter
from pipeline.metrics import Registry
from pipeline.tokens import DEFAULT_TTL_S, MAX_TTL_S, canonical_user, issue_token, verify_token
from schemas.codec import Codec
from topics.admin import admin_client
from topics.client import AsyncProducer, DeliveryError
from topics.specs import CHAT, MODERATION

logger = logging.getLogger(__name__)

SEND_TIMEOUT_MS = 10_000
PARTITIONER = "murmur2_random"  # Java-compatible for keyed messages; see partition_for()
MAX_BODY_BYTES = 16 * 1024
CLOSE_TOO_SLOW = 4008
CLOSE_POLICY = 1008


@dataclass(frozen=True, slots=True)
class ChatConfig:
    limits: ChatLimits = field(default_factory=ChatLimits)
    outbox: OutboxLimits = field(default_factory=OutboxLimits)
    coalesce_ms: int = 50
    max_frame_chars: int = 16 * 1024  # bigger text frames get `frame_too_large`
    frames_per_s: float = 20.0  # inbound frames per connection before `flood` closes it
    frames_burst: float = 40.0
    history_default_limit: int = 100
    history_max_limit: int = 1000
    history_max_scan: int = 50_000  # records read per history request, at most
    history_readers: int = 2  # concurrent history reads (one Kafka consumer each)
    unassign_linger_s: float = 10.0
    token_ttl_s: int = DEFAULT_TTL_S
    fanout: Literal["kafka", "local"] = "kafka"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _error(code: str, message: str, **extra: Any) -> str:
    shown = {k: v for k, v in extra.items() if v is not None}
    return _dumps({"type": "error", "code": code, "message": message, **shown})


def _http_error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status, headers=headers)


class _Connection:
    __slots__ = ("channel", "flood", "outbox", "user")

    def __init__(self, channel: str, outbox: ClientOutbox, flood: TokenBucket) -> None:
        self.channel = channel
        self.outbox = outbox
        self.flood = flood
        self.user: str | None = None


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
    ) -> None:
        self.bootstrap = kafka_bootstrap
        self._token_secret = token_secret
        self._admin_token = admin_token
        self.config = config or ChatConfig()
        self.server_id = server_id or f"{socket.gethostname()}:{os.getpid()}"
        self._channel_exists = channel_exists
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
        self._sessions: set[asyncio.Task[None]] = set()
        self.started = False

    def _count(self, event: str, amount: int = 1) -> None:
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
        )
        self.hub.follower, self.hub.partitions = self._follower, self.partitions
        self._follower.start()
        # a chat message that cannot be stored within seconds is refused (`unavailable`), not
        # delivered minutes late
        self._producer = AsyncProducer(
            self.bootstrap, partitioner=PARTITIONER, **{"message.timeout.ms": SEND_TIMEOUT_MS}
        )
        self._moderation_follower = ModerationFollower(
            self.bootstrap, MODERATION, self._on_moderation
        )
        await self._moderation_follower.start()
        self._history = HistoryReader(self.bootstrap, self.codec, self.config.history_max_scan)

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
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=5.0)
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
            self._count("codec_errors")
            return None
        return str(record["channel"]), _dumps(message_json(record))

    def _deliver_chat(self, items: list[tuple[str, str]]) -> None:
        self.hub.publish_many(items)

    def _on_moderation(self, values: list[bytes], replay: bool) -> None:
        for value in values:
            try:
                action = ModerationAction.from_record(self.codec.expect("ModerationAction", value))
            except (CodecError, ValueError, KeyError):
                self._count("codec_errors")
                continue
            self.moderation.apply(action)
            self._count("moderation_applied")
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

    async def moderate(self, action: ModerationAction) -> ModerationAction:
        """Store `action` in the moderation topic (durably) and apply it here at once; every
        other chat server applies it when its follower reads it."""
        if self._producer is not None:
            value = self.codec.encode("ModerationAction", action.to_record())
            await self._producer.send(MODERATION, action.key, value)
        else:
            self._announce(action)
        self.moderation.apply(action)
        self._count(f"moderation_{action.action}")
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

        def deleted(message_id: str) -> bool:
            return self.moderation.is_deleted(channel, message_id)

        async with self._history_slots:
            return await asyncio.to_thread(
                reader.read, channel, partition, since_ms, until, limit, deleted
            )

    # -- routes -------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            WebSocketRoute("/chat/{channel}", self._websocket, name="chat"),
            Route("/api/chat/{channel}", self._history_endpoint, methods=["GET"]),
            Route("/api/moderation/{channel}", self._moderation_state, methods=["GET"]),
            Route("/api/moderation/{channel}/{action}", self._moderate, methods=["POST"]),
            Route("/api/users/token", self._issue_token, methods=["POST"]),
        ]

    # -- WebSocket ----------------------------------------------------------------------------

    async def _websocket(self, websocket: WebSocket) -> None:
        channel = websocket.path_params["channel"]
        if not valid_channel(channel) or (
            self._channel_exists is not None and not self._channel_exists(channel)
        ):
            await websocket.close(CLOSE_POLICY, "unknown channel")  # before accept: HTTP 403
            return
        await websocket.accept()
        outbox = ClientOutbox(websocket.send_text, self.config.outbox)
        flood = TokenBucket(self.config.frames_per_s, self.config.frames_burst)
        flood.updated_s = time.monotonic()
        conn = _Connection(channel, outbox, flood)
        writer = asyncio.create_task(outbox.run())
        reader = asyncio.create_task(self._read_frames(websocket, conn))
        session = asyncio.current_task()
        if session is not None:
            self._sessions.add(session)
        self._count("connections_opened")
        try:
            waited: list[asyncio.Future[Any]] = [reader, writer, outbox.finished]
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if session is not None:
                self._sessions.discard(session)
            self.hub.leave(channel, outbox)
            outbox.stop()
            for task in (reader, writer):
                task.cancel()
            await asyncio.wait([reader, writer])
            close = self._close_for(reader, outbox)
            if close is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(websocket.close(*close), 1.0)

    def _close_for(
        self, reader: asyncio.Task[tuple[int, str] | None], outbox: ClientOutbox
    ) -> tuple[int, str] | None:
        """How to close a finished session: the reader's say, else the outbox's, else none."""
        if reader.done() and not reader.cancelled():
            error = reader.exception()
            if error is not None:
                logger.warning("chat session failed: %r", error)
                return (1011, "server error")
            close = reader.result()
            if close is not None:
                self._count(f"closed_{close[0]}")
                return close
        if outbox.close_reason is not None:
            self._count("closed_too_slow")
            return (CLOSE_TOO_SLOW, outbox.close_reason)
        return None

    async def _read_frames(self, websocket: WebSocket, conn: _Connection) -> tuple[int, str] | None:
        """Serve one viewer's frames; → the close code and reason, or None if it left."""
        try:
            await self.hub.join(conn.channel, conn.outbox)
        except (TimeoutError, KafkaException):
            conn.outbox.push_control(_error("unavailable", "chat is unavailable, retry soon"))
            await asyncio.sleep(0.2)  # let the writer deliver the error
            return (1011, "chat unavailable")
        conn.outbox.push_control(self._welcome(conn))
        while True:
            event = await websocket.receive()
            if event["type"] == "websocket.disconnect":
                return None
            if conn.flood.take(time.monotonic()) > 0:
                self._refuse(conn, "flood", "too many frames")
                await asyncio.sleep(0.1)
                return (CLOSE_POLICY, "flood: too many frames")
            text = event.get("text")
            if text is None:
                self._refuse(conn, "bad_frame", "binary frames are not supported")
                continue
            if len(text) > self.config.max_frame_chars:
                limit = self.config.max_frame_chars
                self._refuse(conn, "frame_too_large", f"frames are limited to {limit} characters")
                continue
            try:
                frame = json.loads(text)
            except (ValueError, RecursionError):
                self._refuse(conn, "bad_frame", "the frame is not JSON")
                continue
            if not isinstance(frame, dict):
                self._refuse(conn, "bad_frame", "the frame is not a JSON object")
                continue
            await self._handle(conn, frame)

    def _welcome(self, conn: _Connection) -> str:
        limits = self.config.limits
        return _dumps(
            {
                "type": "welcome",
                "channel": conn.channel,
                "server": self.server_id,
                "slow_mode_s": self.moderation.slow_mode_s(conn.channel),
                "limits": {
                    "max_text_chars": limits.max_text_chars,
                    "rate_per_s": limits.rate_per_s,
                    "burst": limits.burst,
                },
            }
        )

    def _refuse(self, conn: _Connection, code: str, message: str, **extra: Any) -> None:
        self._count(f"refused_{code}")
        conn.outbox.push_control(_error(code, message, **extra))

    async def _handle(self, conn: _Connection, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        nonce = frame.get("nonce")
        if nonce is not None and not (isinstance(nonce, str) and len(nonce) <= 64):
            self._refuse(conn, "bad_frame", "nonce must be a string of at most 64 characters")
            return
        if kind == "send":
            await self._send(conn, frame, nonce)
        elif kind == "auth":
            token = frame.get("token")
            if not isinstance(token, str):
                self._refuse(conn, "bad_frame", "auth needs a token string", nonce=nonce)
                return
            try:
                claims = verify_token(self._token_secret, token)
            except AuthError as exc:
                self._refuse(conn, "auth_failed", str(exc), nonce=nonce)
                return
            conn.user = claims.user
            authed = {"type": "authed", "user": claims.user, "expires_ms": claims.expires_ms}
            if nonce is not None:
                authed["nonce"] = nonce
            conn.outbox.push_control(_dumps(authed))
        elif kind == "ping":
            conn.outbox.push_control(_dumps({"type": "pong", "nonce": nonce}))
        else:
            self._refuse(conn, "bad_frame", "unknown frame type", nonce=nonce)

    async def _send(self, conn: _Connection, frame: dict[str, Any], nonce: str | None) -> None:
        if conn.user is None:
            self._refuse(
                conn, "auth_required", "send an auth frame with a token first", nonce=nonce
            )
            return
        text = frame.get("text")
        if not isinstance(text, str):
            self._refuse(conn, "bad_frame", "send needs a text string", nonce=nonce)
            return
        now = time.time()
        verdict = self.rules.check(conn.channel, conn.user, text, now)
        if isinstance(verdict, Refusal):
            retry = verdict.retry_after_ms
            self._refuse(conn, verdict.code, verdict.message, nonce=nonce, retry_after_ms=retry)
            return
        record = {
            "id": secrets.token_urlsafe(12),
            "channel": conn.channel,
            "user": conn.user,
            "text": verdict,
            "sent_ms": int(now * 1000),
            "server": self.server_id,
        }
        if self._producer is not None:
            try:
                value = self.codec.encode("ChatMessage", record)
                await self._producer.send(CHAT, conn.channel, value)
            except (DeliveryError, KafkaException, BufferError) as exc:
                logger.warning("chat produce failed channel=%s: %s", conn.channel, exc)
                self._refuse(conn, "unavailable", "the message was not stored, retry", nonce=nonce)
                return
        else:
            self.hub.publish(conn.channel, _dumps(message_json(record)))
        self._count("accepted")
        ack = {"type": "ack", "id": record["id"], "ts": record["sent_ms"]}
        if nonce is not None:
            ack["nonce"] = nonce
        conn.outbox.push_control(_dumps(ack))

    # -- HTTP ---------------------------------------------------------------------------------

    def _admin(self, request: Request) -> JSONResponse | None:
        """None when the request carries the admin bearer token, else the 401 to return."""
        if admin_authorized(request.headers.get("authorization"), self._admin_token):
            return None
        return _http_error(
            401, "unauthorized", "admin token required", **{"WWW-Authenticate": "Bearer"}
        )

    @staticmethod
    async def _json_body(request: Request) -> dict[str, Any] | JSONResponse:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _http_error(413, "too_large", f"bodies are limited to {MAX_BODY_BYTES}")
        try:
            value = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            return _http_error(400, "bad_request", "the body is not JSON")
        if not isinstance(value, dict):
            return _http_error(400, "bad_request", "the body is not a JSON object")
        return value

    async def _history_endpoint(self, request: Request) -> JSONResponse:
        channel = request.path_params["channel"]
        if not valid_channel(channel):
            return _http_error(400, "bad_request", "invalid channel name")
        params = request.query_params
        values: dict[str, int | None] = {}
        for name in ("since", "until", "limit"):
            raw = params.get(name)
            if raw is None or raw == "":
                values[name] = None
                continue
            try:
                values[name] = int(raw)
            except ValueError:
                return _http_error(400, "bad_request", f"{name} must be an integer")
        given = values["limit"]
        limit = self.config.history_default_limit if given is None else given
        if not 1 <= limit <= self.config.history_max_limit:
            top = self.config.history_max_limit
            return _http_error(400, "bad_request", f"limit must be within 1..{top}")
        since, until = values["since"], values["until"]
        if since is not None and until is not None and since > until:
            return _http_error(400, "bad_request", "since is after until")
        try:
            page = await self.history(channel, since, until, limit)
        except KafkaException as exc:
            logger.warning("chat history failed channel=%s: %s", channel, exc)
            return _http_error(503, "unavailable", "chat history is unavailable")
        return JSONResponse(page.to_json())

    async def _moderation_state(self, request: Request) -> JSONResponse:
        channel = request.path_params["channel"]
        if not valid_channel(channel):
            return _http_error(400, "bad_request", "invalid channel name")
        return JSONResponse(self.moderation.snapshot(channel, int(time.time() * 1000)))

    async def _moderate(self, request: Request) -> JSONResponse:
        refused = self._admin(request)
        if refused is not None:
            return refused
        channel = request.path_params["channel"]
        action = request.path_params["action"]
        if not valid_channel(channel):
            return _http_error(400, "bad_request", "invalid channel name")
        if action not in ("ban", "timeout", "unban", "delete", "slow"):
            return _http_error(404, "not_found", "actions: ban, timeout, unban, delete, slow")
        body = await self._json_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            made = action_from_fields(channel, action, body, int(time.time() * 1000))
        except ValueError as exc:
            return _http_error(400, "bad_request", str(exc))
        try:
            await self.moderate(made)
        except (DeliveryError, KafkaException, BufferError) as exc:
            logger.warning("moderation produce failed channel=%s: %s", channel, exc)
            return _http_error(503, "unavailable", "the action was not stored, retry")
        return JSONResponse(made.to_json())

    async def _issue_token(self, request: Request) -> JSONResponse:
        refused = self._admin(request)
        if refused is not None:
            return refused
        body = await self._json_body(request)
        if isinstance(body, JSONResponse):
            return body
        user = body.get("user")
        ttl = body.get("ttl_s", self.config.token_ttl_s)
        if not isinstance(user, str):
            return _http_error(400, "bad_request", "user must be a string")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL_S:
            return _http_error(400, "bad_request", f"ttl_s must be an integer in 1..{MAX_TTL_S}")
        try:
            name = canonical_user(user)
        except ValueError as exc:
            return _http_error(400, "bad_request", str(exc))
        token = issue_token(self._token_secret, name, ttl)
        claims = verify_token(self._token_secret, token)
        return JSONResponse({"user": name, "token": token, "expires_ms": claims.expires_ms})

    def openapi_paths(self) -> dict[str, Any]:
        """OpenAPI 3 `paths` for the chat endpoints, for the app's `/api/openapi.json`."""
        return openapi_paths()


def openapi_paths() -> dict[str, Any]:
    channel = {"name": "channel", "in": "path", "required": True, "schema": {"type": "string"}}
    admin: list[dict[str, list[str]]] = [{"bearerAuth": []}]

    def query(name: str, doc: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "schema": {"type": "integer"}, "description": doc}

    def body(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
        schema = {"type": "object", "properties": props, "required": required}
        return {"content": {"application/json": {"schema": schema}}}

    user = {"type": "string", "pattern": "^[a-z0-9_]{1,25}$"}
    reason = {"type": "string", "maxLength": 500}
    actions = {
        "ban": body({"user": user, "reason": reason}, ["user"]),
        "timeout": body(
            {"user": user, "seconds": {"type": "integer"}, "reason": reason}, ["user", "seconds"]
        ),
        "unban": body({"user": user}, ["user"]),
        "delete": body({"message_id": {"type": "string"}}, ["message_id"]),
        "slow": body({"seconds": {"type": "integer", "minimum": 0}}, ["seconds"]),
    }
    paths: dict[str, Any] = {
        "/api/chat/{channel}": {
            "get": {
                "summary": "Chat history of a channel, read back from Kafka",
                "parameters": [
                    channel,
                    query("since", "ms epoch, inclusive; oldest first from here"),
                    query("until", "ms epoch, inclusive (default now)"),
                    query("limit", "1..1000, default 100"),
                ],
                "responses": {"200": {"description": "messages, more, next_since"}},
            }
        },
        "/api/moderation/{channel}": {
            "get": {
                "summary": "Bans, timeouts and slow mode in force",
                "parameters": [channel],
                "responses": {"200": {"description": "moderation state"}},
            }
        },
        "/api/users/token": {
            "post": {
                "summary": "Issue a chat user token (demo/admin)",
                "security": admin,
                "requestBody": body({"user": user, "ttl_s": {"type": "integer"}}, ["user"]),
                "responses": {"200": {"description": "user, token, expires_ms"}},
            }
        },
    }
    for action, request_body in actions.items():
        paths[f"/api/moderation/{{channel}}/{action}"] = {
            "post": {
                "summary": f"Moderation: {action}",
                "security": admin,
                "parameters": [channel],
                "requestBody": request_body,
                "responses": {"200": {"description": "the stored action"}},
            }
        }
    return paths


__all__ = [
    "ChatConfig",
    "ChatService",
    "HistoryPage",
    "message_json",
    "openapi_paths",
]
