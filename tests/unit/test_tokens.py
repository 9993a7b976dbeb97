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


def _flip_unused_bits(text: str) -> str:
    """The same bytes with the last character's unused low bits set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 0b1111, 3: 0b11}.get(len(text) % 4, 0)
    return text[:-1] + alphabet[alphabet.index(text[-1]) | unused]


def _respell(signature: str) -> list[str]:
    swapped = signature.replace("-", "+").replace("_", "/")
    return [
        signature + "=",
        signature + "==",
        signature + "!!",
        swapped if swapped != signature else "+" + signature[1:],
        _flip_unused_bits(signature),
        signature + "A",
    ]


def test_exactly_one_spelling_of_a_token_verifies() -> None:
    """Lenient base64 let one token verify under six spellings (issue 12, item 7)."""
    for ttl in range(1, 40):  # signatures with '-' and '_' among them
        token = issue_token(SECRET, "bob", ttl_s=ttl, now_s=NOW)
        prefix, payload, signature = token.split(".")
        assert verify_token(SECRET, token, now_s=NOW).user == "bob"
        for spelling in _respell(signature):
            assert spelling != signature
            with pytest.raises(AuthError):
                verify_token(SECRET, f"{prefix}.{payload}.{spelling}", now_s=NOW)
        for spelling in (payload + "=", _flip_unused_bits(payload)):
            if spelling != payload:
                with pytest.raises(AuthError):
                    verify_token(SECRET, f"{prefix}.{spelling}.{signature}", now_s=NOW)


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from(["=", "!", ".", " ", "\n", "+", "/"])),
        min_size=1,
        max_size=4,
    )
)
def test_no_respelling_of_a_signature_verifies(inserts: list[tuple[int, str]]) -> None:
    token = issue_token(SECRET, "bob", now_s=NOW)
    prefix, payload, signature = token.split(".")
    for position, char in inserts:
        position %= len(signature) + 1
        signature = signature[:position] + char + signature[position:]
    with pytest.raises(AuthError):
        verify_token(SECRET, f"{prefix}.{payload}.{signature}", now_s=NOW)
