"""Request bodies read within a byte budget and parsed as one JSON object
(`pipeline.jsonbody`): the REST API's and chat's write endpoints read them here."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from pipeline.errors import BodyTooLarge
from pipeline.jsonbody import parse_json_object

MAX_BODY_BYTES = 16 * 1024


async def read_json_object(request: Request, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body as a JSON object; `BodyTooLarge` past `max_bytes` (read no further),
    `InvalidJson` when it is not one. An empty body is `{}`."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(f"bodies are limited to {max_bytes} bytes")
    return parse_json_object(body or b"{}")
