"""Thin producer/consumer helpers over confluent-kafka.

Producers are idempotent with acks=all and every delivery report is checked: a failed delivery
raises `DeliveryError` from `flush()`/`send()` so a worker crashes and restarts from its last
committed offset instead of losing data quietly. Consumers never auto-commit: the caller
commits a message after its side effect is durable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from topics.specs import GOP_MAX_BYTES

logger = logging.getLogger(__name__)

__all__ = [
    "OFFSET_BEGINNING",
    "OFFSET_END",
    "AsyncProducer",
    "CheckedProducer",
    "Delivery",
    "DeliveryError",
    "Message",
    "TopicPartition",
    "consume",
    "make_consumer",
    "poll_checked",
    "start_new_partitions_at_end",
]


class DeliveryError(Exception):
    """A message was not acknowledged by the brokers."""


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    partition: int
    offset: int


def _delivery(msg: Message) -> Delivery:
    return Delivery(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "message.max.bytes": GOP_MAX_BYTES + 65536,
        "compression.type": "none",
    }
    config.update(extra)
    return config


class CheckedProducer:
    """Synchronous use: `produce()` many, then `flush()` raises if any delivery failed."""

    def __init__(self, bootstrap: str, **extra: Any) -> None:
        self._producer = Producer(producer_config(bootstrap, **extra))
        self._errors: list[str] = []
        self.deliveries: list[Delivery] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err.str()}")
        else:
            self.deliveries.append(_delivery(msg))

    def produce(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        partition: int | None = None,
    ) -> None:
        """Queue one message; `partition` None → the default partitioner (by key)."""
        where: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, on_delivery=self._on_delivery, **where
                )
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> list[Delivery]:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} messages not delivered within {timeout}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError("; ".join(errors))
        deliveries, self.deliveries = self.deliveries, []
        return deliveries

    def send(self, topic: str, key: str | bytes | None, value: bytes | None) -> Delivery:
        self.produce(topic, key, value)
        return self.flush()[-1]


class AsyncProducer:
    """For asyncio code: `await send()` resolves when the brokers acknowledged the message.

    A daemon thread serves delivery callbacks; results hop back to the loop thread-safely.
    """

    def __init__(self, bootstrap: str, **extra: Any) -> None:
        self._producer = Producer(producer_config(bootstrap, **extra))
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-producer", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def send_nowait(
        self, topic: str, key: str | bytes | None, value: bytes | None
    ) -> asyncio.Future[Delivery]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivery] = loop.create_future()

        def resolve(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                result: Delivery | Exception = DeliveryError(f"{msg.topic()}: {err.str()}")
            else:
                result = _delivery(msg)
            loop.call_soon_threadsafe(_settle, future, result)

        self._producer.produce(topic, value=value, key=key, on_delivery=resolve)
        return future

    async def send(self, topic: str, key: str | bytes | None, value: bytes | None) -> Delivery:
        while True:
            try:
                future = self.send_nowait(topic, key, value)
                break
            except BufferError:
                await asyncio.sleep(0.05)
        return await future

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._closed.set()
        self._thread.join(timeout)


def _settle(future: asyncio.Future[Delivery], result: Delivery | Exception) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


def make_consumer(
    bootstrap: str,
    group: str | None,
    *,
    topics: Iterable[str] = (),
    on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None,
    on_revoke: Callable[[Consumer, list[TopicPartition]], None] | None = None,
    on_lost: Callable[[Consumer, list[TopicPartition]], None] | None = None,
    **extra: Any,
) -> Consumer:
    """A consumer that never commits on its own. `group=None` → a group-less reader that the
    caller `assign()`s (no commits at all)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group or "onair-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": GOP_MAX_BYTES + 65536,
        "fetch.wait.max.ms": 50,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    config.update(extra)
    consumer = Consumer(config)
    topic_list = list(topics)
    if topic_list:
        kwargs: dict[str, Any] = {}
        if on_assign is not None:
            kwargs["on_assign"] = on_assign
        if on_revoke is not None:
            kwargs["on_revoke"] = on_revoke
        if on_lost is not None:
            kwargs["on_lost"] = on_lost
        consumer.subscribe(topic_list, **kwargs)
    return consumer


def start_new_partitions_at_end(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """An `on_assign` callback for live workers: a partition the group has never committed on
    starts at its end (the live edge, not the whole replay window), and that position is
    committed at once, so a successor of a worker killed before its first commit resumes
    there instead of jumping to the then-current end and skipping what came in between."""
    committed = consumer.committed(partitions, timeout=10)
    fresh = [tp for tp in committed if tp.offset < 0]
    for tp in fresh:
        tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]
    if fresh:
        consumer.commit(offsets=fresh, asynchronous=False)
        logger.info("group starts %d new partitions at their end", len(fresh))


def consume(
    consumer: Consumer,
    stop: threading.Event,
    handle: Callable[[Message], None],
    on_idle: Callable[[], None] | None = None,
) -> None:
    """Hand every message to `handle` until `stop` is set, and call `on_idle` after each poll
    (work finished in the background is committed there). A poll error or whatever `handle` or
    `on_idle` raises ends the loop: the role exits and its successor resumes from the committed
    offset. Closing the consumer stays with the caller."""
    while not stop.is_set():
        msg = poll_checked(consumer, 0.2)
        if msg is not None:
            handle(msg)
        if on_idle is not None:
            on_idle()


def poll_checked(consumer: Consumer, timeout: float) -> Message | None:
    """One message, or None on timeout or end of partition; real errors raise."""
    msg = consumer.poll(timeout)
    if msg is None:
        return None
    err = msg.error()
    if err is not None:
        if err.code() == KafkaError._PARTITION_EOF:
            return None
        raise KafkaException(err)
    return msg
