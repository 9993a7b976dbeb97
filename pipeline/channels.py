"""Channels and their stream keys (pure rules; the Kafka-backed table is in topics/).

A stream key is 32 random bytes, shown once to the streamer and stored only as its SHA-256
(high-entropy secrets need no slow hash). Keys are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from pipeline.errors import OnairError

CHANNEL_NAME = re.compile(r"[a-z0-9_]{1,32}")
KEY_PREFIX = "live_"


class InvalidChannelName(OnairError):
    pass


def check_channel_name(name: str) -> str:
    if not CHANNEL_NAME.fullmatch(name):  # not match + `$`: `$` also matches before "\n"
        raise InvalidChannelName(
            f"channel name {name[:40]!r} must be 1-32 of lowercase letters, digits, underscore"
        )
    return name


def new_stream_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_stream_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_stream_key(key), stored_hash)


def new_stream_id(channel: str, now_ms: int) -> str:
    """`demo-20261126T043000Z-9f2c`: sortable, unique, safe in URLs and object keys."""
    import time

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_ms / 1000))
    return f"{channel}-{stamp}-{secrets.token_hex(2)}"
