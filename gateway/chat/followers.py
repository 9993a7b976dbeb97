"""The chat server's Kafka followers: each a thread owning one group-less consumer, handing
what it reads to the loop thread.

    PartitionFollower    onair.chat: `assign()` only the partitions of channels with local
                         viewers, starting at the end offset; records decoded on the thread
                         and delivered in poll order (so per-channel order is kept)
    ModerationFollower   onair.moderation (compacted): read whole at start (`start()` returns
                         once caught up), then followed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition

from topics.client import make_consumer

logger = logging.getLogger(__name__)

ChatDecoder = Callable[[bytes | None, bytes | None], "tuple[str, str] | None"]


class PartitionFollower:
    """Follows the partitions of `topic` it is asked for, with `assign()` only (no group).

    `want(p)` → a future resolved once `p` is assigned at its current end offset (or at once
    if already followed); `release(p)` unassigns it after `linger_s` unless wanted again, so a
    viewer reconnecting quickly loses nothing. Records are decoded on the thread by `decode`
    (→ (channel, message JSON) or None to skip) and handed to `deliver` on the loop thread in
    poll order, so per-partition (hence per-channel) order is kept.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        decode: ChatDecoder,
        deliver: Callable[[list[tuple[str, str]]], None],
        linger_s: float = 10.0,
        consumer_config: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._decode = decode
        self._deliver = deliver
        self.linger_s = linger_s
        self._config: dict[str, Any] = {"queued.min.messages": 10_000, "fetch.wait.max.ms": 20}
        self._config.update(consumer_config or {})
        self._commands: queue.SimpleQueue[tuple[str, int, asyncio.Future[None] | None]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.assigned: set[int] = set()
        self.records = 0
        self.errors = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="chat-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def want(self, partition: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commands.put(("want", partition, future))
        return future

    def release(self, partition: int) -> None:
        self._commands.put(("release", partition, None))

    def _resolve(self, future: asyncio.Future[None]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_set_done, future)

    def _run(self) -> None:
        consumer = make_consumer(self.bootstrap, None, **self._config)
        releasing: dict[int, float] = {}
        try:
            while not self._stop.is_set():
                self._commands_step(consumer, releasing)
                if not self.assigned:
                    with contextlib.suppress(queue.Empty):
                        self._handle(consumer, releasing, self._commands.get(timeout=0.1))
                    continue
                msg = consumer.poll(0.05)
                if msg is None:
                    continue
                batch = [msg, *consumer.consume(num_messages=2000, timeout=0)]
                items = []
                for record in batch:
                    err = record.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            self.errors += 1
                            logger.warning("chat consumer: %s", err.str())
                        continue
                    item = self._decode(record.key(), record.value())
                    if item is not None:
                        items.append(item)
                self.records += len(batch)
                if items:
                    assert self._loop is not None
                    self._loop.call_soon_threadsafe(self._deliver, items)
        except Exception:
            logger.exception("chat follower stopped")
            raise
        finally:
            consumer.close()

    def _commands_step(self, consumer: Any, releasing: dict[int, float]) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            self._handle(consumer, releasing, command)
        now = time.monotonic()
        for partition, at in list(releasing.items()):
            if at <= now:
                del releasing[partition]
                consumer.incremental_unassign([TopicPartition(self.topic, partition)])
                self.assigned.discard(partition)
                logger.info("chat: stopped following %s[%d]", self.topic, partition)

    def _handle(
        self,
        consumer: Any,
        releasing: dict[int, float],
        command: tuple[str, int, asyncio.Future[None] | None],
    ) -> None:
        kind, partition, future = command
        if kind == "want":
            releasing.pop(partition, None)
            if partition not in self.assigned:
                self._assign(consumer, partition)
            if future is not None:
                self._resolve(future)
        elif kind == "release" and partition in self.assigned:
            releasing[partition] = time.monotonic() + self.linger_s

    def _assign(self, consumer: Any, partition: int) -> None:
        tp = TopicPartition(self.topic, partition)
        try:
            _low, high = consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
            offset = high
        except KafkaException as exc:
            logger.warning("chat: end offset of %s[%d] unknown (%s)", self.topic, partition, exc)
            offset = OFFSET_END
        consumer.incremental_assign([TopicPartition(self.topic, partition, offset)])
        self.assigned.add(partition)
        logger.info("chat: following %s[%d] from offset %d", self.topic, partition, offset)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ModerationFollower:
    """Reads every partition of the compacted moderation topic from the beginning, then keeps
    following. `deliver(values, replay)` runs on the loop thread with raw values in log order
    per partition; `replay` is True for records that existed when the follower started.
    `start()` returns once the backlog has been delivered."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        deliver: Callable[[list[bytes], bool], None],
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._deliver = deliver
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.records = 0

    async def start(self, timeout_s: float = 30.0) -> None:
        self._loop = asyncio.get_running_loop()
        caught_up: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(caught_up,), name="moderation-follower", daemon=True
        )
        self._thread.start()
        await asyncio.wait_for(caught_up, timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _signal(self, future: asyncio.Future[None], error: BaseException | None) -> None:
        assert self._loop is not None

        def settle() -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self._loop.call_soon_threadsafe(settle)

    def _run(self, caught_up: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            config: dict[str, Any] = {"enable.partition.eof": True}
            consumer = make_consumer(self.bootstrap, None, **config)
        except Exception as exc:
            self._signal(caught_up, exc)
            return
        try:
            topics = consumer.list_topics(self.topic, timeout=10.0).topics
            meta = topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise KafkaException(f"topic {self.topic} is missing (run ensure_topics)")
            behind = set(meta.partitions)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in behind])
            replay = True
            while not self._stop.is_set():
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                batch = [msg, *consumer.consume(num_messages=1000, timeout=0)]
                values = []
                for record in batch:
                    err = record.error()
                    if err is None:
                        value = record.value()
                        if value is not None:  # tombstones carry nothing to apply
                            values.append(value)
                        continue
                    if err.code() == KafkaError._PARTITION_EOF:
                        behind.discard(record.partition() or 0)
                    else:
                        logger.warning("moderation consumer: %s", err.str())
                self.records += len(values)
                if values:
                    self._loop.call_soon_threadsafe(self._deliver, values, replay)
                if replay and not behind:
                    replay = False
                    self._signal(caught_up, None)
        except Exception as exc:
            logger.exception("moderation follower stopped")
            self._signal(caught_up, exc)
        finally:
            consumer.close()
