"""Poison events: retried, then dead-lettered and skipped; infrastructure failures propagate."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.errors import StoreError
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


@pytest.mark.parametrize(
    "exc",
    [StoreError("put: connection refused"), KafkaException(KafkaError(KafkaError._TRANSPORT))],
    ids=["store", "kafka"],
)
def test_infrastructure_failures_propagate_at_once(exc: Exception) -> None:
    producer = RecordingProducer()
    dead, _ = make(producer)
    handler = failing(99, exc)
    with pytest.raises(type(exc)):
        dead.handle(FakeMessage(), producer, handler, lambda: None)  # type: ignore[arg-type]
    assert handler.calls["n"] == 1 and not producer.sent
