"""The one admin check every write endpoint uses: `Authorization: Bearer <admin token>`.

Bearer only (the scheme compared case-insensitively, as RFC 7235 asks; a bare token is
refused), the token compared in constant time, and everything refused when no admin token
is configured (an empty token must never match an empty header).
"""

from __future__ import annotations

import hmac


def admin_authorized(authorization: str | None, admin_token: str) -> bool:
    """True when the `Authorization` header value carries exactly the admin token."""
    if not admin_token or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), admin_token.encode())
