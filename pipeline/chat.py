"""Chat rules, pure: what a chat server checks before a message is produced.

`ChatRules.check()` runs, in order: ban / timeout (`ModerationState`), text normalisation
(`normalize_text`: control, format and invisible characters out, NFC, combining marks capped
per character, trimmed; empty or longer than `max_text_chars` is refused), slow mode, the
duplicate-spam guard (on a fingerprint that ignores case, spacing and what renders the same),
and last the per-user token bucket, so only a message that will be produced costs a token.
A refusal is a `Refusal` value with a stable `code` (the WebSocket error code) and, where
waiting helps, `retry_after_ms`.

`ModerationState` is the latest moderation action per key (ban/timeout/unban per user, slow
mode per channel, deleted message ids). Its keys are the `onair.moderation` topic's keys, so
applying the compacted topic from the start rebuilds exactly the same state. `hides()` says
which stored messages history (and VOD chat replay) leaves out.

Every per-user table is bounded (least recently used entries go first). No I/O here; callers
pass the clock.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.chattext import MAX_MARKS_PER_CHAR, normalize_text, text_fingerprint
from pipeline.tokens import canonical_user

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS: Final = 500
MAX_TIMEOUT_S: Final = 14 * 24 * 3600
MAX_SLOW_MODE_S: Final = 24 * 3600
CHANNEL_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")

# Error / refusal codes (stable: they are part of the WebSocket frame reference).
BANNED: Final = "banned"
TIMED_OUT: Final = "timed_out"
TEXT_EMPTY: Final = "text_empty"
TEXT_TOO_LONG: Final = "text_too_long"
SLOW_MODE: Final = "slow_mode"
DUPLICATE: Final = "duplicate"
RATE_LIMITED: Final = "rate_limited"

ACTIONS: Final = ("ban", "timeout", "unban", "delete", "slow")
_AVRO_KIND = {"ban": "BAN", "timeout": "TIMEOUT", "unban": "UNBAN", "delete": "DELETE"}
_AVRO_KIND["slow"] = "SLOW_MODE"
_DOMAIN_KIND = {v: k for k, v in _AVRO_KIND.items()}


def valid_channel(name: str) -> bool:
    return CHANNEL_RE.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    message: str
    retry_after_ms: int | None = None


def check_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> Refusal | None:
    """Refusal for a normalised text that is empty or too long (in code points)."""
    if not text:
        return Refusal(TEXT_EMPTY, "the message is empty")
    if len(text) > max_chars:
        return Refusal(TEXT_TOO_LONG, f"the message is longer than {max_chars} characters")
    return None


def _retry_ms(seconds: float) -> int:
    return max(1, int(seconds * 1000 + 0.999))


@dataclass(slots=True)
class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up; starts full."""

    rate_per_s: float
    burst: float
    tokens: float = -1.0
    updated_s: float = 0.0

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        if self.tokens < 0:
            self.tokens = self.burst

    def _refill(self, now_s: float) -> None:
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)
        self.updated_s = now_s

    def wait_s(self, now_s: float) -> float:
        """Seconds until one token is available (0.0 = available now). Takes nothing."""
        self._refill(now_s)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate_per_s

    def take(self, now_s: float) -> float:
        """Take one token: 0.0 if taken, else the seconds to wait (nothing taken)."""
        wait = self.wait_s(now_s)
        if wait == 0.0:
            self.tokens -= 1.0
        return wait


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = max_entries

    def touch(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.max_entries:
            self.popitem(last=False)


class RateLimiter:
    """One token bucket per key, at most `max_keys` of them (an evicted key starts full again,
    which only ever errs on the lenient side for an idle user)."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000) -> None:
        TokenBucket(rate_per_s, burst)  # validates
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: _Lru = _Lru(max_keys)

    def _bucket(self, key: str, now_s: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_s, self.burst, updated_s=now_s)
        self._buckets.touch(key, bucket)
        return bucket  # type: ignore[no-any-return]

    def wait_s(self, key: str, now_s: float) -> float:
        return self._bucket(key, now_s).wait_s(now_s)

    def take(self, key: str, now_s: float) -> float:
        return self._bucket(key, now_s).take(now_s)

    def __len__(self) -> int:
        return len(self._buckets)


class DuplicateGuard:
    """Refuses a user repeating the same text (case and spacing ignored) in a channel within
    `window_s` of the previous accepted copy."""

    def __init__(self, window_s: float = 30.0, max_keys: int = 100_000) -> None:
        self.window_s = window_s
        self._last: _Lru = _Lru(max_keys)

    @staticmethod
    def _fingerprint(text: str) -> str:
        return text_fingerprint(text)

    def wait_s(self, channel: str, user: str, text: str, now_s: float) -> float:
        last = self._last.get((channel, user))
        if last is None or self.window_s <= 0:
            return 0.0
        fingerprint, at_s = last
        if fingerprint != self._fingerprint(text):
            return 0.0
        return max(0.0, float(at_s) + self.window_s - now_s)

    def remember(self, channel: str, user: str, text: str, now_s: float) -> None:
        self._last.touch((channel, user), (self._fingerprint(text), now_s))


@dataclass(frozen=True, slots=True)
class ModerationAction:
    """One moderation decision, as stored (Avro `ModerationAction`) in `onair.moderation`."""

    channel: str
    action: str  # one of ACTIONS
    moderator: str
    created_ms: int
    user: str | None = None
    message_id: str | None = None
    seconds: int = 0
    until_ms: int | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown moderation action {self.action!r}")
        if self.action in ("ban", "timeout", "unban") and not self.user:
            raise ValueError(f"{self.action} needs a user")
        if self.action == "delete" and not self.message_id:
            raise ValueError("delete needs a message_id")
        if self.action in ("timeout", "slow") and self.seconds < 0:
            raise ValueError("seconds must not be negative")
        if self.action == "timeout" and self.seconds < 1:
            raise ValueError("a timeout lasts at least one second")

    @classmethod
    def make(
        cls,
        channel: str,
        action: str,
        *,
        moderator: str,
        now_ms: int,
        user: str | None = None,
        message_id: str | None = None,
        seconds: int = 0,
        reason: str | None = None,
    ) -> ModerationAction:
        until = now_ms + seconds * 1000 if action == "timeout" else None
        return cls(
            channel, action, moderator, now_ms, user, message_id, seconds, until, reason or None
        )

    @property
    def key(self) -> str:
        """The compaction key: the latest action per key is the state."""
        if self.action == "slow":
            return f"{self.channel}/slow"
        if self.action == "delete":
            return f"{self.channel}/delete/{self.message_id}"
        return f"{self.channel}/user/{self.user}"

    def to_record(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "action": _AVRO_KIND[self.action],
            "user": self.user,
            "message_id": self.message_id,
            "until_ms": self.until_ms,
            "seconds": self.seconds,
            "moderator": self.moderator,
            "reason": self.reason,
            "created_ms": self.created_ms,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ModerationAction:
        return cls(
            channel=str(record["channel"]),
            action=_DOMAIN_KIND[str(record["action"])],
            moderator=str(record["moderator"]),
            created_ms=int(record["created_ms"]),
            user=record.get("user"),
            message_id=record.get("message_id"),
            seconds=int(record.get("seconds") or 0),
            until_ms=record.get("until_ms"),
            reason=record.get("reason"),
        )

    def to_json(self) -> dict[str, Any]:
        shown = {
            "channel": self.channel,
            "action": self.action,
            "user": self.user,
            "message_id": self.message_id,
            "seconds": self.seconds,
            "until_ms": self.until_ms,
            "moderator": self.moderator,
            "reason": self.reason,
            "created_ms": self.created_ms,
        }
        return {k: v for k, v in shown.items() if v is not None}


def action_from_fields(
    channel: str, action: str, body: Mapping[str, Any], now_ms: int, moderator: str = "admin"
) -> ModerationAction:
    """A moderation action from loose fields (an API body, CLI arguments); ValueError names
    what is wrong. `body` may carry user, seconds, message_id, reason, moderator."""

    def text(name: str, limit: int, required: bool) -> str | None:
        value = body.get(name)
        if value is None:
            if required:
                raise ValueError(f"{action} needs {name}")
            return None
        if not isinstance(value, str) or not 0 < len(value) <= limit:
            raise ValueError(f"{name} must be a string of 1..{limit} characters")
        return value

    def seconds(low: int, high: int) -> int:
        value = body.get("seconds")
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"seconds must be an integer in {low}..{high}")
        return value

    if not valid_channel(channel):
        raise ValueError("invalid channel name")
    by = text("moderator", 64, False) or moderator
    reason = text("reason", 500, False)
    user = None
    if action in ("ban", "timeout", "unban"):
        user = canonical_user(text("user", 64, True) or "")
    message_id = text("message_id", 64, True) if action == "delete" else None
    duration = 0
    if action == "timeout":
        duration = seconds(1, MAX_TIMEOUT_S)
    elif action == "slow":
        duration = seconds(0, MAX_SLOW_MODE_S)
    return ModerationAction.make(
        channel,
        action,
        moderator=by,
        now_ms=now_ms,
        user=user,
        message_id=message_id,
        seconds=duration,
        reason=reason,
    )


@dataclass(slots=True)
class _ChannelModeration:
    users: dict[str, ModerationAction] = field(default_factory=dict)  # latest ban/timeout
    slow_mode_s: int = 0
    deleted: set[str] = field(default_factory=set)
    deleted_order: deque[str] = field(default_factory=deque)


class ModerationState:
    """Latest moderation per key in log order (last write wins, like compaction); applying the
    same action twice is harmless."""

    def __init__(self, max_deleted_per_channel: int = 10_000) -> None:
        self.max_deleted_per_channel = max_deleted_per_channel
        self._channels: dict[str, _ChannelModeration] = {}

    def _channel(self, channel: str) -> _ChannelModeration:
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _ChannelModeration()
        return state

    def apply(self, action: ModerationAction) -> None:
        state = self._channel(action.channel)
        if action.action in ("ban", "timeout"):
            assert action.user is not None
            state.users[action.user] = action
        elif action.action == "unban":
            assert action.user is not None
            state.users.pop(action.user, None)
        elif action.action == "slow":
            state.slow_mode_s = action.seconds
        elif action.action == "delete":
            assert action.message_id is not None
            if action.message_id not in state.deleted:
                state.deleted.add(action.message_id)
                state.deleted_order.append(action.message_id)
                while len(state.deleted_order) > self.max_deleted_per_channel:
                    state.deleted.discard(state.deleted_order.popleft())

    def restriction(self, channel: str, user: str, now_ms: int) -> Refusal | None:
        state = self._channels.get(channel)
        if state is None:
            return None
        action = state.users.get(user)
        if action is None:
            return None
        if action.action == "ban":
            return Refusal(BANNED, "you are banned from this channel")
        until = action.until_ms or 0
        if until > now_ms:
            return Refusal(TIMED_OUT, "you are timed out in this channel", until - now_ms)
        return None

    def slow_mode_s(self, channel: str) -> int:
        state = self._channels.get(channel)
        return state.slow_mode_s if state else 0

    def is_deleted(self, channel: str, message_id: str) -> bool:
        state = self._channels.get(channel)
        return state is not None and message_id in state.deleted

    def hides(self, channel: str, message_id: str, user: str, sent_ms: int) -> bool:
        """Whether a stored message is left out of history (and so of VOD chat replay): a
        moderator deleted it, or its sender's latest ban or timeout came at or after it was
        sent (live panels clear a user's lines when the user is banned or timed out). Only
        the latest action per user is known (the topic is compacted): after an unban, the
        lines cleared by the ban before it come back."""
        state = self._channels.get(channel)
        if state is None:
            return False
        if message_id in state.deleted:
            return True
        action = state.users.get(user)
        return action is not None and action.created_ms >= sent_ms

    def snapshot(self, channel: str, now_ms: int) -> dict[str, Any]:
        """What is in force now in `channel` (for the API)."""
        state = self._channels.get(channel)
        if state is None:
            return {"channel": channel, "slow_mode_s": 0, "bans": [], "timeouts": []}
        bans = [a.to_json() for a in state.users.values() if a.action == "ban"]
        timeouts = [
            a.to_json()
            for a in state.users.values()
            if a.action == "timeout" and (a.until_ms or 0) > now_ms
        ]
        return {
            "channel": channel,
            "slow_mode_s": state.slow_mode_s,
            "bans": sorted(bans, key=lambda a: str(a["user"])),
            "timeouts": sorted(timeouts, key=lambda a: str(a["user"])),
        }


@dataclass(frozen=True, slots=True)
class ChatLimits:
    rate_per_s: float = 1.0
    burst: float = 3.0
    max_text_chars: int = MAX_TEXT_CHARS
    max_marks_per_char: int = MAX_MARKS_PER_CHAR
    duplicate_window_s: float = 30.0
    max_users: int = 100_000  # per-user tables keep at most this many entries


class ChatRules:
    """Decides whether one message may be produced, and records it when it may."""

    def __init__(self, limits: ChatLimits, moderation: ModerationState) -> None:
        self.limits = limits
        self.moderation = moderation
        self._rate = RateLimiter(limits.rate_per_s, limits.burst, limits.max_users)
        self._duplicates = DuplicateGuard(limits.duplicate_window_s, limits.max_users)
        self._last_sent: _Lru = _Lru(limits.max_users)  # (channel, user) -> seconds

    def check(self, channel: str, user: str, raw_text: str, now_s: float) -> str | Refusal:
        """The normalised text to produce, or why not. Accepting updates the rate, slow-mode
        and duplicate state; a refusal changes nothing."""
        restricted = self.moderation.restriction(channel, user, int(now_s * 1000))
        if restricted is not None:
            return restricted
        text = normalize_text(raw_text, self.limits.max_marks_per_char)
        bad_text = check_text(text, self.limits.max_text_chars)
        if bad_text is not None:
            return bad_text
        slow_s = self.moderation.slow_mode_s(channel)
        last = self._last_sent.get((channel, user))
        if slow_s > 0 and last is not None and now_s - last < slow_s:
            wait = slow_s - (now_s - last)
            return Refusal(SLOW_MODE, f"slow mode: one message every {slow_s}s", _retry_ms(wait))
        dup_wait = self._duplicates.wait_s(channel, user, text, now_s)
        if dup_wait > 0:
            return Refusal(DUPLICATE, "you sent that message already", _retry_ms(dup_wait))
        wait = self._rate.take(user, now_s)
        if wait > 0:
            return Refusal(RATE_LIMITED, "you are sending messages too fast", _retry_ms(wait))
        self._duplicates.remember(channel, user, text, now_s)
        self._last_sent.touch((channel, user), now_s)
        return text
