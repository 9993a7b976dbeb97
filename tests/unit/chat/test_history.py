"""Chat history's reading and filtering without Kafka: `HistoryReader` over `LogReader`, a
small fake of `topics.reader.Reader` holding one partition's records in memory, with the
moderation a `ChatService` passes it (`ModerationState.hides`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.chat.history import HistoryReader
from pipeline.chat import ModerationAction, ModerationState
from schemas.codec import Codec
from topics.reader import Batch, Start, Track

T0_MS = 1_700_000_000_000
CODEC = Codec()


@dataclass(frozen=True)
class Record:
    """One record of the partition: what a confluent-kafka `Message` answers."""

    broker_ms: int
    key_bytes: bytes
    value_bytes: bytes

    def timestamp(self) -> tuple[int, int]:
        return (2, self.broker_ms)  # TIMESTAMP_LOG_APPEND_TIME

    def key(self) -> bytes:
        return self.key_bytes

    def value(self) -> bytes:
        return self.value_bytes


class LogReader:
    """The part of `topics.reader.Reader` that `HistoryReader` uses, over a list."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.range: tuple[int, int] | None = None

    def locate(self, partitions: Iterable[int], start: Start) -> dict[int, Track]:
        assert start.kind == "time"
        at = next(
            (i for i, r in enumerate(self.records) if r.broker_ms >= start.value),
            len(self.records),
        )
        return {p: Track(at, len(self.records)) for p in partitions}

    def assign(self, tracks: Mapping[int, Track]) -> None:
        (track,) = tracks.values()
        assert track.stop is not None
        self.range = (track.next, track.stop)

    @property
    def finished(self) -> bool:
        return self.range is None or self.range[0] >= self.range[1]

    def poll(self, timeout_s: float) -> Batch | None:
        del timeout_s
        if self.range is None or self.finished:
            return None
        start, stop = self.range
        end = min(stop, start + 3)  # small batches: the scan must cross batch boundaries
        self.range = (end, stop)
        return Batch(list(self.records[start:end]), {0: end})  # type: ignore[arg-type]

    def release(self, partitions: Iterable[int]) -> None:
        del partitions
        self.range = None

    def close(self) -> None:
        pass


class FakeHistory(HistoryReader):
    def __init__(self, records: list[Record]) -> None:
        super().__init__("unused:9092", CODEC, max_scan=10_000)
        self.log = LogReader(records)

    def _take(self) -> Any:
        return self.log


def message(channel: str, number: int, user: str, at_ms: int) -> Record:
    record = {
        "id": f"m{number}",
        "channel": channel,
        "user": user,
        "text": f"text {number}",
        "sent_ms": at_ms,
        "server": "s1",
    }
    return Record(at_ms, channel.encode(), CODEC.encode("ChatMessage", record))


def moderation(*actions: ModerationAction) -> ModerationState:
    state = ModerationState()
    for action in actions:
        state.apply(action)
    return state


def act(kind: str, at_ms: int, **fields: Any) -> ModerationAction:
    return ModerationAction.make("room", kind, moderator="mod", now_ms=at_ms, **fields)


# room: m0..m9 one second apart from T0, alice and bob alternating; another channel between
RECORDS = [
    rec
    for i in range(10)
    for rec in (
        message("room", i, "alice" if i % 2 == 0 else "bob", T0_MS + i * 1000),
        message("other", 100 + i, "alice", T0_MS + i * 1000 + 500),
    )
]


def read(
    state: ModerationState, since_ms: int | None, until_ms: int, limit: int = 100
) -> tuple[list[str], bool]:
    def hidden(record: dict[str, Any]) -> bool:
        return state.hides("room", str(record["id"]), str(record["user"]), int(record["sent_ms"]))

    page = FakeHistory(RECORDS).read("room", 0, since_ms, until_ms, limit, hidden)
    return [m["id"] for m in page.messages], page.more


@pytest.mark.parametrize(
    ("actions", "shown"),
    [
        ((), "0123456789"),
        ((act("delete", T0_MS + 20_000, message_id="m3"),), "012456789"),
        ((act("delete", T0_MS + 20_000, message_id="m103"),), "0123456789"),
        ((act("ban", T0_MS + 4_500, user="bob"),), "02456789"),
        ((act("timeout", T0_MS + 4_500, user="alice", seconds=1),), "1356789"),
    ],
    ids=["none", "deleted", "other-channels-id", "banned-later", "timed-out-later"],
)
def test_history_leaves_out_what_moderation_hides(
    actions: tuple[ModerationAction, ...], shown: str
) -> None:
    """`shown`: the numbers of the room's messages the page must hold, in order."""
    expected = [f"m{n}" for n in shown]
    state = moderation(*actions)
    assert read(state, T0_MS, T0_MS + 60_000) == (expected, False)
    assert read(state, None, T0_MS + 60_000) == (expected, False)


def test_limit_counts_only_what_is_shown_and_the_range_is_inclusive() -> None:
    state = moderation(act("delete", T0_MS + 20_000, message_id="m1"))
    assert read(state, T0_MS, T0_MS + 60_000, limit=3) == (["m0", "m2", "m3"], True)
    assert read(state, T0_MS + 2_000, T0_MS + 4_000) == (["m2", "m3", "m4"], False)
    assert read(state, None, T0_MS + 4_000, limit=2) == (["m3", "m4"], True)
