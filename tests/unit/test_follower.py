"""The pure parts of following a topic: the restart backoff, the cursor's sifting of polled
messages, a bounded read's idle timeout (over a stand-in reader), and how /healthz renders
watched followers."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

import topics.reader
from pipeline.health import Health
from topics.follower import Backoff, Follower
from topics.reader import Batch, Cursor, Track, read


def test_backoff_doubles_from_half_a_second_to_thirty() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay(healthy_for_s=0.0) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


@pytest.mark.parametrize(
    ("healthy_for_s", "expected"),
    [(29.9, 4.0), (30.0, 0.5), (600.0, 0.5)],
    ids=["short-spell-keeps-growing", "healthy-spell-resets", "long-spell-resets"],
)
def test_backoff_resets_after_a_healthy_spell(healthy_for_s: float, expected: float) -> None:
    backoff = Backoff()
    assert [backoff.next_delay(0.0) for _ in range(3)] == [0.5, 1.0, 2.0]
    assert backoff.next_delay(healthy_for_s) == expected


def _msg(partition: int, offset: int, value: bytes = b"v") -> Message:
    return Message(topic="t", partition=partition, offset=offset, value=value)


def _eof(partition: int, offset: int) -> Message:
    return Message(
        topic="t", partition=partition, offset=offset, error=KafkaError(KafkaError._PARTITION_EOF)
    )


def _seen(batch_messages: list[Message]) -> list[tuple[int, int]]:
    return [(m.partition() or 0, m.offset() or 0) for m in batch_messages]


def test_cursor_hands_records_once_and_moves_positions() -> None:
    cursor = Cursor()
    cursor.add(0, Track(next=5, end=9))
    cursor.add(1, Track(next=0, end=2))
    batch = cursor.sift([_msg(0, 4), _msg(0, 5), _msg(1, 0), _msg(0, 6), _msg(2, 0)])
    assert _seen(batch.messages) == [(0, 5), (1, 0), (0, 6)]  # 4 is behind, 2 not assigned
    assert batch.positions == {0: 7, 1: 1}
    again = cursor.sift([_msg(0, 6), _msg(0, 7)])
    assert _seen(again.messages) == [(0, 7)]
    assert again.positions == {0: 8}


def test_cursor_end_of_partition_moves_over_gaps_and_marks_the_end() -> None:
    cursor = Cursor()
    cursor.add(0, Track(next=0, end=10))
    batch = cursor.sift([_msg(0, 3), _eof(0, 10)])  # compaction left 3 alone below 10
    assert _seen(batch.messages) == [(0, 3)]
    assert batch.positions == {0: 10}
    assert cursor.at_end == {0}
    cursor.sift([_msg(0, 10)])
    assert cursor.at_end == set()


def test_cursor_stops_a_bounded_partition_at_its_stop() -> None:
    cursor = Cursor()
    cursor.add(0, Track(next=0, end=3, stop=2))
    batch = cursor.sift([_msg(0, 0), _msg(0, 1), _msg(0, 2), _eof(0, 3)])
    assert _seen(batch.messages) == [(0, 0), (0, 1)]
    assert batch.positions == {0: 2}
    assert cursor.done(0)


def test_cursor_forgets_a_released_partition() -> None:
    cursor = Cursor()
    cursor.add(0, Track(next=0, end=3))
    cursor.remove(0)
    assert cursor.sift([_msg(0, 0), _eof(0, 3)]).messages == []


def test_cursor_raises_on_an_error_that_is_not_the_end() -> None:
    cursor = Cursor()
    cursor.add(0, Track(next=0, end=3))
    failed = Message(topic="t", partition=0, error=KafkaError(KafkaError._TRANSPORT))
    with pytest.raises(KafkaException):
        cursor.sift([_msg(0, 0), failed])


class _OneBatchThenSilence:
    """A stand-in `Reader` for `read()`: partition 0 bounded at 5, one batch of offsets 0
    and 1, then nothing ever again."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.cursor = Cursor()
        self._batches = [Batch([_msg(0, 0), _msg(0, 1)], {0: 2})]

    def __enter__(self) -> _OneBatchThenSilence:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def partitions(self) -> list[int]:
        return [0]

    def locate(self, partitions: list[int], *args: object, **kwargs: object) -> dict[int, Track]:
        return {p: Track(0, 5, stop=5) for p in partitions}

    def assign(self, tracks: Mapping[int, Track]) -> None:
        for partition, track in tracks.items():
            self.cursor.add(partition, track)

    @property
    def assigned(self) -> set[int]:
        return set(self.cursor.next)

    @property
    def finished(self) -> bool:
        return False

    def poll(self, timeout_s: float) -> Batch | None:
        if self._batches:
            return self._batches.pop(0)
        time.sleep(0.01)
        return None


def test_a_bounded_read_counts_idle_time_only_while_the_caller_waits_for_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(topics.reader, "Reader", _OneBatchThenSilence)
    records = read("unused:9092", "t", idle_timeout_s=0.3)
    assert next(records).offset() == 0
    time.sleep(0.5)  # the caller is busy with the first record: that is not the broker's silence
    assert next(records).offset() == 1
    asked = time.monotonic()
    with pytest.raises(TimeoutError, match=r"t partitions \[0\]: nothing read for 0 s"):
        next(records)
    assert time.monotonic() - asked >= 0.3


def _reader_of(problems: dict[str, str | None], name: str) -> Callable[[], str | None]:
    return lambda: problems[name]


def test_healthz_names_each_watched_problem_until_it_recovers() -> None:
    health = Health("http")
    problems: dict[str, str | None] = {"table:onair.channels": None, "chat": None}
    for name in problems:
        health.watch(name, _reader_of(problems, name))
    health.ok()
    assert health.render() == (200, "ok\n")
    problems["chat"] = "restarting for 1.0 s (1 restarts), last error: RuntimeError: boom"
    problems["table:onair.channels"] = "restarting for 2.0 s (2 restarts), last error: x"
    assert health.render() == (
        503,
        "degraded: table:onair.channels: restarting for 2.0 s (2 restarts), last error: x; "
        "chat: restarting for 1.0 s (1 restarts), last error: RuntimeError: boom\n",
    )
    problems["table:onair.channels"] = None
    problems["chat"] = None
    assert health.render() == (200, "ok\n")


def test_healthz_degraded_wins_over_starting_but_not_over_failed() -> None:
    health = Health("vod")
    health.watch("table:onair.vods", lambda: "restarting")
    assert health.render() == (503, "degraded: table:onair.vods: restarting\n")
    health.unwatch("table:onair.vods")
    assert health.render() == (503, "starting: starting up\n")
    health.watch("table:onair.vods", lambda: "restarting")
    health.failed("a write failed")
    assert health.render() == (503, "failed: a write failed\n")


def test_healthz_reports_a_probe_that_raises() -> None:
    def broken() -> str | None:
        raise ValueError("no state")

    health = Health("ingest")
    health.ok()
    health.watch("lifecycle", broken)
    assert health.render() == (503, "degraded: lifecycle: probe raised ValueError: no state\n")


def test_a_follower_that_never_started_or_stopped_reports_nothing() -> None:
    follower = Follower("idle", "unused:9092", "t", lambda batch: None)
    assert follower.probe() is None
    follower.stop()
    assert follower.probe() is None
