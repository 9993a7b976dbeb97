"""The chat WebSocket protocol, `/chat/<channel>`: one session per viewer, frames in, replies
out (what others say reaches the viewer through its `ClientOutbox`, from the fan-out hub).

A session is refused before the handshake for an unknown channel, joins the channel on the
hub (its partition followed first), sends `welcome`, then serves frames: each costs a token of
the connection's flood bucket (empty → closed with 1008), must be a JSON object in a text
frame of at most `max_frame_chars`, and gets one reply: `auth` → `authed`, `send` → `ack` once
`ChatRules` accepted it and it is stored, `ping` → `pong`; anything wrong → an `error` frame,
and the connection stays. A viewer too slow to read is closed with 4008. The frame reference
is `docs/chat.md`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.chat.fanout import ClientOutbox
from gateway.chat.frames import dumps, error_frame
from pipeline.chat import Refusal, TokenBucket, valid_channel
from pipeline.errors import AuthError, InvalidJson
from pipeline.jsonbody import parse_json_object
from pipeline.tokens import verify_token
from topics.client import DeliveryError

if TYPE_CHECKING:
    from gateway.chat.service import ChatService

logger = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 4008
CLOSE_POLICY = 1008


class _Connection:
    __slots__ = ("channel", "flood", "outbox", "user")

    def __init__(self, channel: str, outbox: ClientOutbox, flood: TokenBucket) -> None:
        self.channel = channel
        self.outbox = outbox
        self.flood = flood
        self.user: str | None = None


class ChatProtocol:
    """Serves the WebSocket sessions of one `ChatService`'s viewers."""

    def __init__(
        self,
        chat: ChatService,
        token_secret: str,
        channel_exists: Callable[[str], bool] | None = None,
    ) -> None:
        self._chat = chat
        self._token_secret = token_secret
        self._channel_exists = channel_exists
        self._sessions: set[asyncio.Task[None]] = set()

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute("/chat/{channel}", self._websocket, name="chat")]

    async def end_sessions(self) -> None:
        """The service is stopping: cancel every session, and wait a little for them."""
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=5.0)

    async def _websocket(self, websocket: WebSocket) -> None:
        chat = self._chat
        channel = websocket.path_params["channel"]
        if not valid_channel(channel) or (
            self._channel_exists is not None and not self._channel_exists(channel)
        ):
            await websocket.close(CLOSE_POLICY, "unknown channel")  # before accept: HTTP 403
            return
        await websocket.accept()
        outbox = ClientOutbox(websocket.send_text, chat.config.outbox)
        flood = TokenBucket(chat.config.frames_per_s, chat.config.frames_burst)
        flood.updated_s = time.monotonic()
        conn = _Connection(channel, outbox, flood)
        writer = asyncio.create_task(outbox.run())
        reader = asyncio.create_task(self._read_frames(websocket, conn))
        session = asyncio.current_task()
        if session is not None:
            self._sessions.add(session)
        chat.count("connections_opened")
        try:
            waited: list[asyncio.Future[Any]] = [reader, writer, outbox.finished]
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if session is not None:
                self._sessions.discard(session)
            chat.hub.leave(channel, outbox)
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
                self._chat.count(f"closed_{close[0]}")
                return close
        if outbox.close_reason is not None:
            self._chat.count("closed_too_slow")
            return (CLOSE_TOO_SLOW, outbox.close_reason)
        return None

    async def _read_frames(self, websocket: WebSocket, conn: _Connection) -> tuple[int, str] | None:
        """Serve one viewer's frames; → the close code and reason, or None if it left."""
        try:
            await self._chat.hub.join(conn.channel, conn.outbox)
        except (TimeoutError, KafkaException):
            conn.outbox.push_control(error_frame("unavailable", "chat is unavailable, retry soon"))
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
            if len(text) > self._chat.config.max_frame_chars:
                limit = self._chat.config.max_frame_chars
                self._refuse(conn, "frame_too_large", f"frames are limited to {limit} characters")
                continue
            try:
                frame = parse_json_object(text)
            except InvalidJson as exc:
                self._refuse(conn, "bad_frame", f"the frame is {exc}")
                continue
            await self._handle(conn, frame)

    def _welcome(self, conn: _Connection) -> str:
        limits = self._chat.config.limits
        return dumps(
            {
                "type": "welcome",
                "channel": conn.channel,
                "server": self._chat.server_id,
                "slow_mode_s": self._chat.moderation.slow_mode_s(conn.channel),
                "limits": {
                    "max_text_chars": limits.max_text_chars,
                    "rate_per_s": limits.rate_per_s,
                    "burst": limits.burst,
                },
            }
        )

    def _refuse(self, conn: _Connection, code: str, message: str, **extra: Any) -> None:
        self._chat.count(f"refused_{code}")
        conn.outbox.push_control(error_frame(code, message, **extra))

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
            conn.outbox.push_control(dumps(authed))
        elif kind == "ping":
            conn.outbox.push_control(dumps({"type": "pong", "nonce": nonce}))
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
        verdict = self._chat.rules.check(conn.channel, conn.user, text, now)
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
            "server": self._chat.server_id,
        }
        try:
            await self._chat.publish(record)
        except (DeliveryError, KafkaException, BufferError) as exc:
            logger.warning("chat produce failed channel=%s: %s", conn.channel, exc)
            self._refuse(conn, "unavailable", "the message was not stored, retry", nonce=nonce)
            return
        self._chat.count("accepted")
        ack = {"type": "ack", "id": record["id"], "ts": record["sent_ms"]}
        if nonce is not None:
            ack["nonce"] = nonce
        conn.outbox.push_control(dumps(ack))
