"""User tokens: round trip, expiry, tampering, garbage."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import AuthError
from pipeline.tokens import canonical_user, issue_token, verify_token

SECRET = "test-secret"
NOW = 1_700_000_000.0


def test_round_trip_carries_the_user_and_expiry() -> None:
    token = issue_token(SECRET, "Alice_1", ttl_s=60, now_s=NOW)
    claims = verify_token(SECRET, token, now_s=NOW + 59)
    assert claims.user == "alice_1"
    assert claims.expires_s == int(NOW) + 60
    assert claims.expires_ms == claims.expires_s * 1000


def test_expired_token_is_refused() -> None:
    token = issue_token(SECRET, "bob", ttl_s=60, now_s=NOW)
    with pytest.raises(AuthError, match="expired"):
        verify_token(SECRET, token, now_s=NOW + 60)


def test_other_secret_is_refused() -> None:
    token = issue_token(SECRET, "bob", now_s=NOW)
    with pytest.raises(AuthError, match="signature"):
        verify_token("another-secret", token, now_s=NOW)


def _reencode(payload: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()


def test_payload_swapped_under_the_same_signature_is_refused() -> None:
    prefix, _payload, signature = issue_token(SECRET, "bob", now_s=NOW).split(".")
    forged = f"{prefix}.{_reencode({'u': 'admin', 'exp': int(NOW) + 10**6})}.{signature}"
    with pytest.raises(AuthError):
        verify_token(SECRET, forged, now_s=NOW)


@pytest.mark.parametrize(
    "token",
    ["", "ot1", "ot1..", "ot2.a.b", "ot1.a.b.c", "ot1.!!.??", "x" * 600, "ot1.é.é"],
    ids=["empty", "prefix", "empty-parts", "version", "four-parts", "bad-b64", "long", "non-ascii"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(AuthError):
        verify_token(SECRET, token, now_s=NOW)


@given(st.text(max_size=300))
def test_garbage_never_verifies_and_only_raises_auth_error(token: str) -> None:
    with pytest.raises(AuthError):
        verify_token(SECRET, token, now_s=NOW)


@pytest.mark.parametrize(
    ("name", "ok"),
    [("alice", True), ("Bob_2", True), ("", False), ("a b", False), ("x" * 26, False)],
    ids=["plain", "mixed-case", "empty", "space", "too-long"],
)
def test_user_names(name: str, ok: bool) -> None:
    if ok:
        assert canonical_user(name) == name.lower()
    else:
        with pytest.raises(ValueError):
            canonical_user(name)


def test_issue_refuses_empty_secret_and_bad_ttl() -> None:
    with pytest.raises(ValueError):
        issue_token("", "alice")
    with pytest.raises(ValueError):
        issue_token(SECRET, "alice", ttl_s=0)


def test_cli_user_token_prints_a_verifiable_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from onair.cli import main

    monkeypatch.setenv("ONAIR_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("ONAIR_TOKEN_SECRET", "cli-secret")
    assert main(["user", "token", "Alice", "--ttl", "120", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["user"] == "alice"
    assert verify_token("cli-secret", shown["token"]).expires_ms == shown["expires_ms"]
    assert main(["user", "token", "not ok"]) == 2
    assert main(["mod", "timeout", "demo", "bob", "0"]) == 2  # refused before any Kafka I/O
