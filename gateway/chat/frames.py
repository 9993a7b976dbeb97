"""The JSON of the chat frame reference (`docs/chat.md`) that more than one module writes:
the compact encoding every frame uses, a `message` object (in `batch` frames and in history
pages), and the `notice` and `error` frames.
"""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def message_json(record: dict[str, Any]) -> dict[str, Any]:
    """A ChatMessage record as the `message` object of the frame reference."""
    return {
        "type": "message",
        "id": record["id"],
        "channel": record["channel"],
        "user": record["user"],
        "text": record["text"],
        "ts": record["sent_ms"],
    }


def notice_frame(code: str, message: str, **extra: Any) -> str:
    return dumps({"type": "notice", "code": code, "message": message, **extra})


def error_frame(code: str, message: str, **extra: Any) -> str:
    """An `error` frame; extras that are None (no nonce, no retry hint) are left out."""
    shown = {k: v for k, v in extra.items() if v is not None}
    return dumps({"type": "error", "code": code, "message": message, **shown})
