"""User tokens for chat: signed, expiring, carrying the user name.

A token reads `ot1.<payload>.<signature>`: `payload` is base64url (no padding) of the JSON
`{"u": user, "exp": unix seconds}`, `signature` is base64url of HMAC-SHA256 over `ot1.<payload>`
with a key derived from the platform's token secret (so the secret itself signs nothing else
by accident). Verification checks the shape and size first, compares signatures in constant
time, and only then reads the payload. Every refusal raises `AuthError` with a message that
never echoes the token.

Base64url is read strictly: the URL-safe alphabet only, no padding, and only the spelling
`issue_token` writes (the unused low bits of the last character are zero). A lenient decoder
let one token verify under six spellings (`=`, `==` or `!!` appended, `+`/`/` for `-`/`_`,
other unused bits): exactly one spelling verifies, so a token can serve as a key (revocation
lists, logs, rate limits) without being aliased.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass

from pipeline.errors import AuthError

PREFIX = "ot1"
DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 365 * 24 * 3600
MAX_TOKEN_CHARS = 512
USER_RE = re.compile(r"[a-z0-9_]{1,25}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_KEY_LABEL = b"onair/user-token/v1"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user: str
    expires_s: int

    @property
    def expires_ms(self) -> int:
        return self.expires_s * 1000


def canonical_user(name: str) -> str:
    """The user name as tokens carry it: lower case, `[a-z0-9_]{1,25}`; ValueError otherwise."""
    user = name.strip().lower()
    if not USER_RE.fullmatch(user):
        raise ValueError(f"user name must be 1-25 of a-z, 0-9, _ (got {len(name)} chars)")
    return user


def _key(secret: str) -> bytes:
    if not secret:
        raise ValueError("the token secret is empty")
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64url without padding: ValueError for anything `_b64` would not write."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # non-zero unused bits in the last character
        raise ValueError("not canonical base64url")
    return data


def _sign(key: bytes, signed_part: str) -> bytes:
    return hmac.new(key, signed_part.encode("ascii"), hashlib.sha256).digest()


def issue_token(
    secret: str, user: str, ttl_s: int = DEFAULT_TTL_S, now_s: float | None = None
) -> str:
    """A token for `user` (canonicalised) valid for `ttl_s` seconds."""
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be within 1..{MAX_TTL_S}")
    now = time.time() if now_s is None else now_s
    claims = {"u": canonical_user(user), "exp": int(now) + ttl_s}
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signed_part = f"{PREFIX}.{payload}"
    return f"{signed_part}.{_b64(_sign(_key(secret), signed_part))}"


def verify_token(secret: str, token: str, now_s: float | None = None) -> TokenClaims:
    """The claims of a valid, unexpired token; `AuthError` for anything else."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
        raise AuthError("malformed token")
    if not token.isascii():
        raise AuthError("malformed token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise AuthError("malformed token")
    try:
        signature = _unb64(parts[2])
    except (binascii.Error, ValueError):
        raise AuthError("malformed token") from None
    expected = _sign(_key(secret), f"{parts[0]}.{parts[1]}")
    if not hmac.compare_digest(signature, expected):
        raise AuthError("bad token signature")
    try:
        claims = json.loads(_unb64(parts[1]))
        user = claims["u"]
        expires_s = claims["exp"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise AuthError("malformed token") from None
    if not isinstance(user, str) or not USER_RE.fullmatch(user):
        raise AuthError("malformed token")
    if not isinstance(expires_s, int) or isinstance(expires_s, bool):
        raise AuthError("malformed token")
    now = time.time() if now_s is None else now_s
    if expires_s <= now:
        raise AuthError("token expired")
    return TokenClaims(user, expires_s)
