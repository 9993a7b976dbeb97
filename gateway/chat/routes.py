"""Chat's REST endpoints, and their OpenAPI fragment for the app's `/api/openapi.json`.

    GET  /api/chat/{channel}                  history, read back from Kafka (since, until, limit)
    GET  /api/moderation/{channel}            bans, timeouts and slow mode in force
    POST /api/moderation/{channel}/{action}   ban, timeout, unban, delete, slow       (admin)
    POST /api/users/token                     issue a chat user token (demo)          (admin)

Admin endpoints need `Authorization: Bearer <admin token>`; bodies are JSON objects of at most
`ChatConfig.max_body_bytes` (`ONAIR_HTTP_MAX_BODY_BYTES`); errors are
`{"error": code, "message": text}`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gateway.http.body import read_json_object
from pipeline.admin import admin_authorized
from pipeline.chat import action_from_fields, valid_channel
from pipeline.errors import BodyTooLarge, InvalidJson
from pipeline.tokens import MAX_TTL_S, canonical_user, issue_token, verify_token
from topics.client import DeliveryError

if TYPE_CHECKING:
    from gateway.chat.service import ChatService

logger = logging.getLogger(__name__)

# `since` / `until` are ms since the epoch; past this (JavaScript's largest exact integer,
# year 287396) a time means nothing, and far past it Kafka's offsets_for_times takes no
# int64: `since=99999999999999999999` was an OverflowError, a 500
MAX_TIME_MS = 2**53 - 1


def _http_error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status, headers=headers)


class ChatApi:
    """The REST endpoints of one `ChatService`."""

    def __init__(self, chat: ChatService, token_secret: str, admin_token: str) -> None:
        self._chat = chat
        self._token_secret = token_secret
        self._admin_token = admin_token

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/chat/{channel}", self._history_endpoint, methods=["GET"]),
            Route("/api/moderation/{channel}", self._moderation_state, methods=["GET"]),
            Route("/api/moderation/{channel}/{action}", self._moderate, methods=["POST"]),
            Route("/api/users/token", self._issue_token, methods=["POST"]),
        ]

    def _admin(self, request: Request) -> JSONResponse | None:
        """None when the request carries the admin bearer token, else the 401 to return."""
        if admin_authorized(request.headers.get("authorization"), self._admin_token):
            return None
        return _http_error(
            401, "unauthorized", "admin token required", **{"WWW-Authenticate": "Bearer"}
        )

    async def _json_body(self, request: Request) -> dict[str, Any] | JSONResponse:
        limit = self._chat.config.max_body_bytes
        try:
            return await read_json_object(request, limit)
        except BodyTooLarge:
            return _http_error(413, "too_large", f"bodies are limited to {limit} bytes")
        except InvalidJson as exc:
            return _http_error(400, "bad_request", f"the body is {exc}")

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
                value = int(raw)
            except ValueError:
                return _http_error(400, "bad_request", f"{name} must be an integer")
            if name != "limit" and not 0 <= value <= MAX_TIME_MS:
                return _http_error(400, "bad_request", f"{name} must be within 0..{MAX_TIME_MS}")
            values[name] = value
        config = self._chat.config
        given = values["limit"]
        limit = config.history_default_limit if given is None else given
        if not 1 <= limit <= config.history_max_limit:
            top = config.history_max_limit
            return _http_error(400, "bad_request", f"limit must be within 1..{top}")
        since, until = values["since"], values["until"]
        if since is not None and until is not None and since > until:
            return _http_error(400, "bad_request", "since is after until")
        try:
            page = await self._chat.history(channel, since, until, limit)
        except KafkaException as exc:
            logger.warning("chat history failed channel=%s: %s", channel, exc)
            return _http_error(503, "unavailable", "chat history is unavailable")
        return JSONResponse(page.to_json())

    async def _moderation_state(self, request: Request) -> JSONResponse:
        channel = request.path_params["channel"]
        if not valid_channel(channel):
            return _http_error(400, "bad_request", "invalid channel name")
        return JSONResponse(self._chat.moderation.snapshot(channel, int(time.time() * 1000)))

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
            await self._chat.moderate(made)
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
        ttl = body.get("ttl_s", self._chat.config.token_ttl_s)
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
                "description": "Left out: messages a moderator deleted, and those of a user "
                "whose latest ban or timeout came at or after they were sent.",
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
