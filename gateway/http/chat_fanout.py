"""Chat fan-out on one chat server: follow the partitions its viewers need, coalesce per
channel, and write to every viewer through a bounded outbox.

    onair.chat ──▶ PartitionFollower (a thread, one group-less consumer; assign() only the
                   partitions of channels with local viewers, starting at the end offset)
               ──▶ FanoutHub (loop thread: per channel, messages gathered for `coalesce_s`
                   then one `batch` frame built once for all of the channel's viewers)
               ──▶ ClientOutbox per viewer (bounded: the oldest batches go first and the viewer
                   is told by a `messages_dropped` notice; too far behind → disconnected)

`partition_for()` is Kafka's Java `murmur2` partitioner; the chat producer is configured with
librdkafka's `murmur2_random`, which places keyed messages the same way, so a chat server
knows which partition carries a channel without asking anyone.

`ModerationFollower` reads the whole compacted `onair.moderation` topic at start, then follows
it, handing decoded actions to the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition

from topics.client import make_consumer

logger = logging.getLogger(__name__)

_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` (seed 0x9747b28c), as an unsigned 32-bit value."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK32
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = (h * _M) & _MASK32
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Java's default partitioner (and librdkafka's `murmur2_random`) picks."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# ---------------------------------------------------------------------------------------------
# One viewer's outbox


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    max_queued_messages: int = 500  # chat messages waiting in batch frames
    max_control_frames: int = 64  # acks, errors, notices waiting (never dropped)
    max_dropped: int = 5_000  # dropped since the outbox was last empty → disconnect
    send_timeout_s: float = 10.0  # one frame stuck this long → disconnect


class ClientOutbox:
    """Frames for one WebSocket, written in order by `run()`; never blocks the caller.
    Create it on the loop thread; `finished` resolves when it is stopped or failed.

    Batch frames may be dropped (oldest first) when more than `max_queued_messages` wait;
    the viewer then gets a `messages_dropped` notice before its next frame. Control frames are
    never dropped: too many of them, too many drops, or one send stuck longer than
    `send_timeout_s` end `run()` with `close_reason` set, and the caller disconnects the viewer.
    """

    def __init__(self, send: Callable[[str], Awaitable[None]], limits: OutboxLimits) -> None:
        self._send = send
        self.limits = limits
        self._frames: deque[tuple[str, int]] = deque()  # (frame, messages in it; 0 = control)
        self._queued_messages = 0
        self._control_frames = 0
        self._dropped_pending = 0
        self._dropped_since_empty = 0
        self.dropped_total = 0
        self.sent_frames = 0
        self.close_reason: str | None = None
        self.send_started: float | None = None  # loop time of the send in progress
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push_batch(self, frame: str, messages: int) -> None:
        if self._closed:
            return
        self._frames.append((frame, messages))
        self._queued_messages += messages
        if self._queued_messages > self.limits.max_queued_messages:
            self._drop_oldest()
        self._wake()

    def push_control(self, frame: str) -> None:
        if self._closed:
            return
        if self._control_frames >= self.limits.max_control_frames:
            self.fail("too slow: replies not read")
            return
        self._frames.append((frame, 0))
        self._control_frames += 1
        self._wake()

    def _drop_oldest(self) -> None:
        kept: deque[tuple[str, int]] = deque()
        while self._queued_messages > self.limits.max_queued_messages and self._frames:
            frame, messages = self._frames.popleft()
            if messages == 0:
                kept.append((frame, messages))
                continue
            self._queued_messages -= messages
            self._dropped_pending += messages
            self._dropped_since_empty += messages
            self.dropped_total += messages
        kept.extend(self._frames)
        self._frames = kept
        if self._dropped_since_empty > self.limits.max_dropped:
            self.fail(f"too slow: {self._dropped_since_empty} messages dropped")

    def fail(self, reason: str) -> None:
        """Stop writing; `run()` returns and the owner closes the connection with `reason`."""
        if self.close_reason is None:
            self.close_reason = reason
        self.stop()

    def stop(self) -> None:
        self._closed = True
        self._frames.clear()
        self._wake()
        if not self.finished.done():
            self.finished.set_result(None)

    def check_stalled(self, now: float) -> bool:
        """Called periodically with the loop time; fails an outbox whose send is stuck."""
        started = self.send_started
        if started is not None and now - started > self.limits.send_timeout_s:
            self.fail("too slow: send stalled")
            return True
        return False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            if not self._frames:
                self._dropped_since_empty = 0
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
                continue
            if self._dropped_pending:
                count, self._dropped_pending = self._dropped_pending, 0
                frame = notice_frame(
                    "messages_dropped",
                    f"{count} messages were dropped: you are behind",
                    count=count,
                )
            else:
                frame, messages = self._frames.popleft()
                if messages:
                    self._queued_messages -= messages
                else:
                    self._control_frames -= 1
            self.send_started = loop.time()
            try:
                await self._send(frame)
            finally:
                self.send_started = None
            self.sent_frames += 1


def message_json(record: dict[str, Any]) -> dict[str, Any]:
    """A ChatMessage record as the `message` object of the frame reference."""
    return {
        "type": "message",
        "id": record["id"],
        "channel": record["channel"],
        "user": record["user"],
        "text": record["text"],
        "ts": record["sent_ms"],
    }


def notice_frame(code: str, message: str, **extra: Any) -> str:
    return _dumps({"type": "notice", "code": code, "message": message, **extra})


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# The hub: viewers per channel, coalescing


class FanoutHub:
    """Channel → local viewers; `publish()` gathers messages, one frame per channel is built
    every `coalesce_s` and pushed to each viewer's outbox. Loop thread only.

    With a `follower`, the first viewer of a channel makes its partition followed, and
    `join()` returns once the partition is assigned (anything produced after that reaches the
    viewer); the last one leaving releases it.
    """

    def __init__(
        self,
        coalesce_s: float = 0.05,
        follower: PartitionFollower | None = None,
        partitions: int = 1,
    ) -> None:
        self.coalesce_s = coalesce_s
        self.follower = follower
        self.partitions = partitions
        self._viewers: dict[str, set[ClientOutbox]] = {}
        self._pending: dict[str, list[str]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._channels_on: dict[int, int] = {}  # partition -> channels with viewers
        self._ready: dict[int, asyncio.Future[None]] = {}
        self.frames_built = 0
        self.messages_in = 0
        self.frames_pushed = 0

    def partition_of(self, channel: str) -> int:
        return partition_for(channel.encode(), self.partitions)

    def viewers(self, channel: str) -> int:
        return len(self._viewers.get(channel, ()))

    @property
    def connections(self) -> int:
        return sum(len(v) for v in self._viewers.values())

    def outboxes(self) -> list[ClientOutbox]:
        return [o for viewers in self._viewers.values() for o in viewers]

    async def join(self, channel: str, outbox: ClientOutbox, timeout_s: float = 10.0) -> None:
        viewers = self._viewers.get(channel)
        if viewers is None:
            viewers = self._viewers[channel] = set()
            if self.follower is not None:
                partition = self.partition_of(channel)
                count = self._channels_on.get(partition, 0)
                self._channels_on[partition] = count + 1
                if count == 0:
                    self._ready[partition] = self.follower.want(partition)
        viewers.add(outbox)
        if self.follower is not None:
            ready = self._ready.get(self.partition_of(channel))
            if ready is not None and not ready.done():
                await asyncio.wait_for(asyncio.shield(ready), timeout_s)

    def leave(self, channel: str, outbox: ClientOutbox) -> None:
        viewers = self._viewers.get(channel)
        if viewers is None:
            return
        viewers.discard(outbox)
        if viewers:
            return
        del self._viewers[channel]
        self._pending.pop(channel, None)
        if self.follower is not None:
            partition = self.partition_of(channel)
            count = self._channels_on.get(partition, 0) - 1
            if count <= 0:
                self._channels_on.pop(partition, None)
                self._ready.pop(partition, None)
                self.follower.release(partition)
            else:
                self._channels_on[partition] = count

    def publish(self, channel: str, message_json: str) -> None:
        if channel not in self._viewers:
            return
        self.messages_in += 1
        pending = self._pending.get(channel)
        if pending is None:
            self._pending[channel] = [message_json]
        else:
            pending.append(message_json)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.coalesce_s, self.flush)

    def publish_many(self, items: list[tuple[str, str]]) -> None:
        for channel, message_json in items:
            self.publish(channel, message_json)

    def notify(self, channel: str, frame: str) -> None:
        """A control frame (e.g. a moderation notice) to every viewer of `channel`, after the
        messages already gathered for it."""
        if channel in self._pending:
            self._flush_channel(channel, self._pending.pop(channel))
        for outbox in list(self._viewers.get(channel, ())):
            outbox.push_control(frame)

    def flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, {}
        for channel, messages in pending.items():
            self._flush_channel(channel, messages)

    def _flush_channel(self, channel: str, messages: list[str]) -> None:
        viewers = self._viewers.get(channel)
        if not viewers or not messages:
            return
        frame = (
            '{"type":"batch","channel":'
            + _dumps(channel)
            + ',"messages":['
            + ",".join(messages)
            + "]}"
        )
        self.frames_built += 1
        count = len(messages)
        for outbox in viewers:
            outbox.push_batch(frame, count)
        self.frames_pushed += len(viewers)

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for outbox in self.outboxes():
            outbox.stop()


# ---------------------------------------------------------------------------------------------
# Kafka followers (each a thread owning one consumer; results hop to the loop thread)

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
