"""Poison events: retried, then dead-lettered and skipped; infrastructure failures propagate."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.errors import ObjectNotFound, StoreError
from pipeline.metrics import Registry
from schemas.codec import Codec
from topics.deadletter import DeadLetters
from topics.specs import DEAD_LETTERS


class FakeMessage:
    def topic(self) -> str:
        return "onair.ingest.gops"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41

    def key(self) -> bytes:
        return b"demo-1"

    def value(self) -> bytes:
        return b"payload"


class RecordingProducer:
    """Stands in for CheckedProducer.send: keeps what would have been acknowledged."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []

    def send(self, topic: str, key: str, value: bytes) -> None:
        self.sent.append((topic, key, value))


def make(producer: RecordingProducer) -> tuple[DeadLetters, Registry]:
    registry = Registry()
    del producer
    dead = DeadLetters(
        "onair.transcode.720p30",
        attempts=3,
        pause_s=0.001,
        registry=registry,
    )
    return dead, registry


def failing(times: int, exc: Exception) -> Any:
    calls = {"n": 0}

    def handler() -> None:
        calls["n"] += 1
        if calls["n"] <= times:
            raise exc

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


def test_a_handler_that_succeeds_is_run_once() -> None:
    producer = RecordingProducer()
    dead, _ = make(producer)
    handler = failing(0, ValueError("x"))
    skipped: list[bool] = []
    assert dead.handle(FakeMessage(), producer, handler, lambda: skipped.append(True))  # type: ignore[arg-type]
    assert handler.calls["n"] == 1 and not skipped and not producer.sent


def test_a_passing_failure_is_retried_and_not_dead_lettered() -> None:
    producer = RecordingProducer()
    dead, _ = make(producer)
    handler = failing(2, ValueError("flaky"))
    assert dead.handle(FakeMessage(), producer, handler, lambda: None)  # type: ignore[arg-type]
    assert handler.calls["n"] == 3
    assert dead.retries.value == 2 and dead.dead.value == 0 and not producer.sent


def test_an_event_failing_every_attempt_is_dead_lettered_with_its_story_and_skipped() -> None:
    producer = RecordingProducer()
    dead, _ = make(producer)
    handler = failing(99, KeyError("packets"))
    skipped: list[bool] = []
    assert not dead.handle(FakeMessage(), producer, handler, lambda: skipped.append(True))  # type: ignore[arg-type]
    assert handler.calls["n"] == 3 and skipped == [True]
    [(topic, key, value)] = producer.sent
    assert (topic, key) == (DEAD_LETTERS, "onair.transcode.720p30")
    record = Codec().expect("DeadLetter", value)
    assert record["topic"] == "onair.ingest.gops"
    assert (record["partition"], record["offset"], record["attempts"]) == (2, 41, 3)
    assert (record["key"], record["value"]) == (b"demo-1", b"payload")
    assert record["error"] == "KeyError: 'packets'"
    assert dead.dead.value == 1


def test_a_kafka_failure_propagates_at_once() -> None:
    producer = RecordingProducer()
    dead, _ = make(producer)
    handler = failing(99, KafkaException(KafkaError(KafkaError._TRANSPORT)))
    with pytest.raises(KafkaException):
        dead.handle(FakeMessage(), producer, handler, lambda: None)  # type: ignore[arg-type]
    assert handler.calls["n"] == 1 and not producer.sent


def test_a_store_outage_is_waited_out_without_spending_attempts() -> None:
    """Five failed tries while the store is down (more than `attempts`), then it is back:
    the event is handled, nothing is dead-lettered."""
    producer = RecordingProducer()
    dead, _ = make(producer)
    dead.store_patience_s = 30
    handler = failing(5, StoreError("put streams/x: could not connect"))
    with patch_waits(dead):
        assert dead.handle(FakeMessage(), producer, handler, lambda: None)  # type: ignore[arg-type]
    assert handler.calls["n"] == 6 and not producer.sent
    assert dead.outage_waits.value == 5 and dead.dead.value == 0


def test_a_store_outage_longer_than_the_patience_ends_the_role() -> None:
    producer = RecordingProducer()
    dead, _ = make(producer)
    dead.store_patience_s = 0.05
    handler = failing(10**6, StoreError("put streams/x: could not connect"))
    with pytest.raises(StoreError), patch_waits(dead):
        dead.handle(FakeMessage(), producer, handler, lambda: None)  # type: ignore[arg-type]
    assert not producer.sent


def test_a_missing_object_is_the_events_problem_not_an_outage() -> None:
    producer = RecordingProducer()
    dead, _ = make(producer)
    handler = failing(99, ObjectNotFound("streams/x/360p30/000001.ts"))
    assert not dead.handle(FakeMessage(), producer, handler, lambda: None)  # type: ignore[arg-type]
    assert handler.calls["n"] == 3 and len(producer.sent) == 1


@contextlib.contextmanager
def patch_waits(dead: DeadLetters) -> Iterator[None]:
    """The pauses between tries, shortened to a millisecond (the schedule is not under test)."""
    real = dead._stop.wait
    dead._stop.wait = lambda timeout=None: real(0.001)  # type: ignore[method-assign]
    try:
        yield
    finally:
        dead._stop.wait = real  # type: ignore[method-assign]
