"""The admin check: Bearer only, exact token, nothing passes when no token is configured."""

from __future__ import annotations

import pytest

from pipeline.admin import admin_authorized

TOKEN = "s3cret-admin-token"


@pytest.mark.parametrize(
    ("header", "token", "expected"),
    [
        (f"Bearer {TOKEN}", TOKEN, True),
        (f"bearer {TOKEN}", TOKEN, True),
        (f"Bearer  {TOKEN} ", TOKEN, True),
        (TOKEN, TOKEN, False),
        (f"Basic {TOKEN}", TOKEN, False),
        ("Bearer wrong", TOKEN, False),
        (f"Bearer {TOKEN}x", TOKEN, False),
        (None, TOKEN, False),
        ("", TOKEN, False),
        ("", "", False),
        ("Bearer ", "", False),
        (None, "", False),
    ],
    ids=[
        "bearer", "scheme-any-case", "spaces", "bare-token", "basic", "wrong", "longer",
        "no-header", "empty-header", "no-token-configured", "empty-bearer-no-token",
        "nothing-at-all",
    ],
)  # fmt: skip
def test_admin_authorized(header: str | None, token: str, expected: bool) -> None:
    assert admin_authorized(header, token) is expected
