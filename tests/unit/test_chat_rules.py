"""Chat rules: normalisation, token bucket, slow mode, duplicates, moderation state."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.chat import (
    ACTIONS,
    BANNED,
    DUPLICATE,
    RATE_LIMITED,
    SLOW_MODE,
    TEXT_EMPTY,
    TEXT_TOO_LONG,
    TIMED_OUT,
    ChatLimits,
    ChatRules,
    ModerationAction,
    ModerationState,
    RateLimiter,
    Refusal,
    TokenBucket,
    action_from_fields,
    check_text,
    valid_channel,
)
from pipeline.chattext import normalize_text
from pipeline.jsonbody import parse_json_object
from schemas.codec import Codec

T0 = 1_700_000_000.0


def rules(**limits: float) -> ChatRules:
    return ChatRules(ChatLimits(**limits), ModerationState())  # type: ignore[arg-type]


def action(kind: str, at_s: float = T0, **fields: object) -> ModerationAction:
    return ModerationAction.make(
        "chan",
        kind,
        moderator="mod",
        now_ms=int(at_s * 1000),
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hello", "hello"),
        ("  padded \t", "padded"),
        ("line\nbreak", "line break"),
        ("bell\x07\x00null", "bellnull"),
        ("c1\x85\x9bcontrols", "c1 controls"),
        ("e\u0301", "\u00e9"),
        ("evil\u202eredro", "evilredro"),
        ("isolate\u2066x\u2069", "isolatex"),
        ("lone\ud800surrogate", "lonesurrogate"),
        ("emoji 👩\u200d💻 kept", "emoji 👩\u200d💻 kept"),
    ],
    ids=[
        "plain",
        "trim",
        "newline",
        "c0",
        "c1",
        "nfc",
        "bidi-override",
        "bidi-isolate",
        "surrogate",
        "zwj-kept",
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@given(st.text(max_size=2000))
def test_normalized_text_has_no_control_characters_and_encodes(raw: str) -> None:
    text = normalize_text(raw)
    assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in text)
    text.encode("utf-8")  # no lone surrogates left
    assert normalize_text(text) == text  # idempotent


def test_check_text_limits_after_normalisation() -> None:
    assert check_text("") == Refusal(TEXT_EMPTY, "the message is empty")
    assert check_text("x" * 500) is None
    refusal = check_text("x" * 501)
    assert refusal is not None and refusal.code == TEXT_TOO_LONG
    # 500 decomposed "é" (1000 code points) are 500 characters after NFC
    assert check_text(normalize_text("e\u0301" * 500)) is None


def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=3.0, updated_s=T0)
    assert [bucket.take(T0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(T0) == pytest.approx(1.0)
    assert bucket.take(T0 + 0.5) == pytest.approx(0.5)
    assert bucket.take(T0 + 1.0) == 0.0
    assert bucket.take(T0 + 100) == 0.0  # refills to burst, not beyond
    assert bucket.tokens == pytest.approx(2.0)


def test_token_bucket_survives_clock_going_back() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1.0, updated_s=T0)
    assert bucket.take(T0) == 0.0
    assert bucket.take(T0 - 10) > 0


def test_rate_limiter_is_per_key_and_bounded() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1.0, max_keys=2)
    assert limiter.take("a", T0) == 0.0
    assert limiter.take("a", T0) > 0
    assert limiter.take("b", T0) == 0.0
    limiter.take("c", T0)
    assert len(limiter) == 2


def test_rules_default_rate_limit_one_per_second_burst_three() -> None:
    chat = rules()
    verdicts = [chat.check("chan", "u", f"m{i}", T0) for i in range(5)]
    assert verdicts[:3] == ["m0", "m1", "m2"]
    for refused in verdicts[3:]:
        assert isinstance(refused, Refusal) and refused.code == RATE_LIMITED
        assert refused.retry_after_ms == 1000
    assert chat.check("chan", "u", "later", T0 + 1.0) == "later"
    assert chat.check("chan", "other", "x", T0) == "x"  # per user


def test_refusals_do_not_cost_tokens() -> None:
    chat = rules(burst=1.0)
    assert isinstance(chat.check("chan", "u", "", T0), Refusal)
    assert isinstance(chat.check("chan", "u", "x" * 501, T0), Refusal)
    assert chat.check("chan", "u", "fine", T0) == "fine"


def test_duplicate_guard_ignores_case_and_spacing_within_window() -> None:
    chat = rules(rate_per_s=100.0, burst=100.0)
    assert chat.check("chan", "u", "Buy  NOW", T0) == "Buy  NOW"
    refused = chat.check("chan", "u", "buy now", T0 + 10)
    assert isinstance(refused, Refusal) and refused.code == DUPLICATE
    assert refused.retry_after_ms == 20_000
    assert chat.check("other", "u", "buy now", T0 + 10) == "buy now"  # per channel
    assert chat.check("chan", "v", "buy now", T0 + 10) == "buy now"  # per user
    assert chat.check("chan", "u", "buy now", T0 + 31) == "buy now"


def test_slow_mode_per_channel() -> None:
    chat = rules(rate_per_s=100.0, burst=100.0)
    chat.moderation.apply(action("slow", seconds=10))
    assert chat.check("chan", "u", "one", T0) == "one"
    refused = chat.check("chan", "u", "two", T0 + 4)
    assert isinstance(refused, Refusal) and refused.code == SLOW_MODE
    assert refused.retry_after_ms == 6000
    assert chat.check("elsewhere", "u", "two", T0 + 4) == "two"
    assert chat.check("chan", "u", "two", T0 + 10) == "two"
    chat.moderation.apply(action("slow", seconds=0))
    assert chat.check("chan", "u", "three", T0 + 10.1) == "three"


def test_ban_timeout_unban() -> None:
    chat = rules(rate_per_s=100.0, burst=100.0)
    chat.moderation.apply(action("ban", user="u", reason="spam"))
    refused = chat.check("chan", "u", "hi", T0)
    assert isinstance(refused, Refusal) and refused.code == BANNED
    assert chat.check("other", "u", "hi", T0) == "hi"  # bans are per channel
    chat.moderation.apply(action("unban", T0 + 1, user="u"))
    assert chat.check("chan", "u", "back", T0 + 1) == "back"
    chat.moderation.apply(action("timeout", T0 + 2, user="u", seconds=60))
    refused = chat.check("chan", "u", "again", T0 + 12)
    assert isinstance(refused, Refusal) and refused.code == TIMED_OUT
    assert refused.retry_after_ms == 50_000
    assert chat.check("chan", "u", "again", T0 + 62) == "again"


def test_latest_action_per_user_wins_in_log_order() -> None:
    state = ModerationState()
    state.apply(action("timeout", user="u", seconds=600))
    state.apply(action("ban", user="u"))
    assert state.restriction("chan", "u", int(T0 * 1000))
    state.apply(action("timeout", user="u", seconds=1))
    assert state.restriction("chan", "u", int(T0 * 1000) + 2000) is None


def test_moderation_keys_match_compaction() -> None:
    assert action("ban", user="u").key == action("unban", user="u").key == "chan/user/u"
    assert action("timeout", user="u", seconds=5).key == "chan/user/u"
    assert action("slow", seconds=3).key == "chan/slow"
    assert action("delete", message_id="m1").key == "chan/delete/m1"


def test_replaying_latest_per_key_rebuilds_the_same_state() -> None:
    log = [
        action("ban", user="a"),
        action("ban", user="b"),
        action("unban", user="a"),
        action("slow", seconds=30),
        action("delete", message_id="m1"),
        action("timeout", user="c", seconds=3600),
    ]
    full = ModerationState()
    for item in log:
        full.apply(item)
    latest = {item.key: item for item in log}  # what compaction keeps
    compacted = ModerationState()
    for item in latest.values():
        compacted.apply(item)
    now_ms = int(T0 * 1000) + 1000
    assert full.snapshot("chan", now_ms) == compacted.snapshot("chan", now_ms)
    assert compacted.is_deleted("chan", "m1")


SENT_MS = int(T0 * 1000) + 5_000  # a message sent 5 s after T0


@pytest.mark.parametrize(
    ("log", "message_id", "user", "hidden"),
    [
        ([], "m1", "u", False),
        ([action("delete", message_id="m1")], "m1", "u", True),
        ([action("delete", message_id="m2")], "m1", "u", False),
        ([action("ban", at_s=T0 + 10, user="u")], "m1", "u", True),
        ([action("ban", at_s=T0 + 10, user="v")], "m1", "u", False),
        ([action("timeout", at_s=T0 + 10, user="u", seconds=60)], "m1", "u", True),
        ([action("timeout", at_s=T0 + 5, user="u", seconds=60)], "m1", "u", True),
        ([action("timeout", at_s=T0 + 1, user="u", seconds=2)], "m1", "u", False),
        (
            [action("ban", at_s=T0 + 10, user="u"), action("unban", at_s=T0 + 20, user="u")],
            "m1",
            "u",
            False,
        ),
        ([action("slow", at_s=T0 + 10, seconds=30)], "m1", "u", False),
    ],
    ids=[
        "nothing",
        "deleted",
        "another-deleted",
        "sender-banned-after",
        "another-user-banned",
        "sender-timed-out-after",
        "timed-out-the-same-ms",
        "sent-after-the-timeout-ended",
        "unbanned-since",
        "slow-mode",
    ],
)
def test_hides_deleted_messages_and_lines_cleared_by_a_later_ban_or_timeout(
    log: list[ModerationAction], message_id: str, user: str, hidden: bool
) -> None:
    state = ModerationState()
    for item in log:
        state.apply(item)
    assert state.hides("chan", message_id, user, SENT_MS) is hidden
    assert not state.hides("other", message_id, user, SENT_MS)


def test_deleted_ids_are_bounded_per_channel() -> None:
    state = ModerationState(max_deleted_per_channel=2)
    for i in range(3):
        state.apply(action("delete", message_id=f"m{i}"))
    assert not state.is_deleted("chan", "m0")
    assert state.is_deleted("chan", "m2")


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("ban", {"user": "u", "reason": "why"}),
        ("timeout", {"user": "u", "seconds": 30}),
        ("unban", {"user": "u"}),
        ("delete", {"message_id": "abc"}),
        ("slow", {"seconds": 5}),
    ],
    ids=["ban", "timeout", "unban", "delete", "slow"],
)
def test_moderation_action_round_trips_through_avro(kind: str, fields: dict[str, Any]) -> None:
    original = action(kind, **fields)
    codec = Codec()
    decoded = codec.expect(
        "ModerationAction", codec.encode("ModerationAction", original.to_record())
    )
    assert ModerationAction.from_record(decoded) == original


@pytest.mark.parametrize(
    ("kind", "fields"),
    [("ban", {}), ("delete", {}), ("timeout", {"user": "u", "seconds": 0}), ("kick", {})],
    ids=["ban-no-user", "delete-no-id", "timeout-zero", "unknown"],
)
def test_invalid_actions(kind: str, fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        action(kind, **fields)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("demo", True),
        ("a-b_C9", True),
        ("", False),
        ("-x", False),
        ("a/b", False),
        ("x" * 65, False),
    ],
    ids=["plain", "mixed", "empty", "leading-dash", "slash", "too-long"],
)
def test_channel_names(name: str, ok: bool) -> None:
    assert valid_channel(name) is ok


# -- invisible text (issue 12, item 8) ------------------------------------------------------

INVISIBLE = [
    "\u200b",  # zero width space
    "\u200c",  # zero width non-joiner
    "\u200d",  # zero width joiner
    "\ufeff",  # byte order mark
    "\u2060",  # word joiner
    "\u00ad",  # soft hyphen
    "\u3164",  # Hangul filler (Lo)
    "\u2800",  # braille pattern blank (So)
    "\U000e0041\U000e0042\U000e007f",  # tag characters
    "\u200e\u200f\u061c",  # bidi marks
    "\u034f",  # combining grapheme joiner
    "\ufe0f",  # a variation selector on nothing
    "\u0301",  # a combining mark on nothing
    "\u115f\u1160\uffa0",  # more Hangul fillers
]


@pytest.mark.parametrize("invisible", INVISIBLE, ids=[f"U+{ord(c[0]):04X}" for c in INVISIBLE])
def test_invisible_only_messages_are_empty_and_refused(invisible: str) -> None:
    assert normalize_text(invisible * 3) == ""
    assert normalize_text(f" {invisible} \u200b{invisible}\t") == ""
    refusal = rules().check("chan", "alice", invisible * 5, T0)
    assert isinstance(refusal, Refusal) and refusal.code == TEXT_EMPTY


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("buy\u200b my stuff", "buy my stuff"),
        ("b\u00adu\u2060y", "buy"),
        ("tag\U000e0068\U000e0069", "tag"),
        ("z" + "\u0301" * 499, "\u017a" + "\u0301" * 3),  # 4 marks on z, then NFC
        ("\u00e9\u0301\u0308" * 2, "\u00e9\u0301\u0308" * 2),  # é is e + one mark
        (" \u0301\u0302 x", "x"),  # marks on a space
        ("family 👨\u200d👩\u200d👧 ok", "family 👨\u200d👩\u200d👧 ok"),
        ("rainbow 🏳\ufe0f\u200d🌈", "rainbow 🏳\ufe0f\u200d🌈"),
        ("astronaut 🧑🏽\u200d🚀", "astronaut 🧑🏽\u200d🚀"),
        ("heart \u2764\ufe0f\ufe0f\ufe0e", "heart \u2764\ufe0f"),  # one selector a character
        ("keycap 1\ufe0f\u20e3", "keycap 1\ufe0f\u20e3"),
        (
            "persian \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "persian \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        ),
        ("devanagari \u0915\u094d\u200d\u0937", "devanagari \u0915\u094d\u200d\u0937"),
        ("latin a\u200db\u200cc", "latin abc"),
        ("joiner at the end 👩\u200d", "joiner at the end 👩"),
        ("two joiners 👩\u200d\u200d💻", "two joiners 👩\u200d💻"),
    ],
    ids=[
        "zwsp-inside",
        "soft-hyphen-word-joiner",
        "tags",
        "499-marks",
        "precomposed-counts-its-mark",
        "marks-on-space",
        "emoji-zwj-family",
        "emoji-zwj-flag",
        "emoji-zwj-skin-tone",
        "variation-selectors",
        "keycap",
        "persian-zwnj",
        "devanagari-zwj",
        "latin-joiners",
        "trailing-joiner",
        "double-joiner",
    ],
)
def test_invisible_and_stacked_characters_are_normalised(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_mark_cap_is_a_limit() -> None:
    assert normalize_text("z" + "\u0301" * 10, max_marks=1) == "\u017a"
    limited = ChatRules(ChatLimits(max_marks_per_char=2), ModerationState())
    assert limited.check("chan", "alice", "z" + "\u0301" * 10, T0) == "\u017a\u0301"


@pytest.mark.parametrize(
    "respelt",
    [
        "buy\u200b my stuff",
        "BUY  MY\u2060 STUFF",
        "\uff42\uff55\uff59 my stuff",
        "buy my stuff\ufe0f",
        "buy\u00a0my stuff",
    ],
    ids=["zwsp", "word-joiner-and-case", "fullwidth", "selector", "no-break-space"],
)
def test_duplicate_guard_compares_what_renders(respelt: str) -> None:
    chat = rules(rate_per_s=100.0, burst=100.0)
    assert chat.check("chan", "alice", "buy my stuff", T0) == "buy my stuff"
    refusal = chat.check("chan", "alice", respelt, T0 + 1)
    assert isinstance(refusal, Refusal) and refusal.code == DUPLICATE


TRICKY = st.text(
    alphabet=st.sampled_from(
        [
            *"ab e\u0301\u0308\u0323\u20e3\ufe0f\ufe0e\u200b\u200c\u200d\u034f\u00ad\u3164\u2800",
            *("\U0001f469", "\U0001f4bb", "\U0001f3f3", "\U0001f3fd", "\U000e0041"),
            *("\u0915", "\u094d", "\u0645", "\u0654", "\u0627"),
        ]
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(TRICKY)
def test_normalisation_of_joiners_and_marks_is_idempotent(raw: str) -> None:
    text = normalize_text(raw)
    assert normalize_text(text) == text
    assert "\u200b" not in text and "\u034f" not in text and "\u3164" not in text
    base_marks = 0
    for char in text:
        base_marks = base_marks + 1 if unicodedata.category(char).startswith("M") else 0
        assert base_marks <= 4


# -- moderation bodies from outside, fuzzed ----------------------------------------------------

CODEC = Codec()
MISSING = object()
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
    st.lists(st.integers(), max_size=2),
)
HOSTILE = {  # per field: values at the documented bounds (half the time), or anything
    "seconds": st.sampled_from([0, 1, 86_400, 86_401, 1_209_600, 1_209_601, -1, 2**63, 10**30]),
    "user": st.sampled_from([" Eve ", "\u212a", "x" * 25, "x" * 26, "a b", "", "\n"]),
    "text": st.sampled_from(["x" * 64, "x" * 65, "x" * 500, "x" * 501, "", "\x00", "\u202e"]),
}
VALID_BODY = {
    "user": "mallory",
    "seconds": 600,
    "message_id": "q8Pz3xY1c2Vb7nKa",
    "reason": "spam",
    "moderator": "mod",
}


@st.composite
def moderation_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one or two fields dropped or replaced by something hostile."""
    body: dict[str, Any] = dict(VALID_BODY)
    for name in draw(st.lists(st.sampled_from([*VALID_BODY, "other"]), min_size=1, max_size=2)):
        bounds = HOSTILE.get(name, HOSTILE["text"])
        value = draw(st.one_of(st.just(MISSING), bounds, bounds, anything))
        if value is MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    return body


@pytest.mark.parametrize("kind", [*ACTIONS, "kick"])
@settings(max_examples=40, deadline=None)
@given(
    channel=st.one_of(
        st.just("demo"),
        st.just("demo"),
        st.sampled_from(["-bad", "", "x" * 64, "x" * 65]),
        st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}", fullmatch=True),
        st.text(max_size=70),
    ),
    fields=moderation_bodies(),
)
def test_a_moderation_body_is_refused_or_stored_applied_and_shown(
    kind: str, channel: str, fields: dict[str, Any]
) -> None:
    """Whatever the API accepts must survive every later step: the Avro record, the state
    every chat server applies, and the JSON answers (issue 12, item 5: a ban that was applied
    and then failed, leaving `GET /api/moderation/<channel>` a 500 for good)."""
    body = parse_json_object(json.dumps(fields))  # what the API hands over
    now_ms = int(T0 * 1000)
    try:
        made = action_from_fields(channel, kind, body, now_ms)
    except ValueError:
        return
    # within what docs/chat.md promises, and every number an Avro long (other readers check)
    assert made.channel == channel and made.action == kind and 0 < len(made.moderator) <= 64
    assert made.reason is None or 0 < len(made.reason) <= 500
    assert made.seconds <= {"timeout": 14 * 24 * 3600, "slow": 24 * 3600}.get(kind, 0)
    for value in made.to_record().values():
        assert not isinstance(value, int) or -(2**63) <= value < 2**63
    record = CODEC.expect("ModerationAction", CODEC.encode("ModerationAction", made.to_record()))
    assert ModerationAction.from_record(record) == made
    state = ModerationState()
    state.apply(made)
    for shown in (made.to_json(), state.snapshot(channel, now_ms)):
        json.dumps(shown, ensure_ascii=False, allow_nan=False).encode("utf-8")
