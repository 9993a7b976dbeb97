"""The chat server's Kafka followers: each a `topics.follower.Follower` (one thread, restarted
where its last batch ended when polling or handling fails) handing what it reads to the loop
thread.

    PartitionFollower    onair.chat: only the partitions of channels with local viewers, each
                         from its end when first wanted; records decoded on the follower
                         thread and delivered in poll order (so per-channel order is kept)
    ModerationFollower   onair.moderation (compacted): read whole at start (`start()` returns
                         once caught up), then followed; a record is a replay when it was
                         below its partition's end when the follower first read it

Each exposes its `follower` for the gateway's `Health.watch(follower.name, follower.probe)`;
its metrics go to the `registry` it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from pipeline.metrics import Registry
from topics.follower import Follower
from topics.reader import BEGINNING, END

logger = logging.getLogger(__name__)

ChatDecoder = Callable[[bytes | None, bytes | None], "tuple[str, str] | None"]


class PartitionFollower:
    """Follows the partitions of `topic` it is asked for, with `assign()` only (no group).

    `want(p)` → a future resolved once `p` is assigned at its current end offset (or at once
    if already followed); `release(p)` unassigns it after `linger_s` unless wanted again, so a
    viewer reconnecting quickly loses nothing. Records are decoded on the follower thread by
    `decode` (→ (channel, message JSON) or None to skip) and handed to `deliver` on the loop
    thread in poll order, so per-partition (hence per-channel) order is kept.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        decode: ChatDecoder,
        deliver: Callable[[list[tuple[str, str]]], None],
        linger_s: float = 10.0,
        consumer_config: dict[str, Any] | None = None,
        *,
        name: str = "chat",
        registry: Registry | None = None,
    ) -> None:
        self.topic = topic
        self._decode = decode
        self._deliver = deliver
        self.linger_s = linger_s
        config: dict[str, Any] = {"queued.min.messages": 10_000, "fetch.wait.max.ms": 20}
        config.update(consumer_config or {})
        self._loop: asyncio.AbstractEventLoop | None = None
        self.records = 0
        self.follower = Follower(
            name,
            bootstrap,
            topic,
            self._handle,
            partitions=(),
            start=END,
            registry=registry,
            config=config,
            max_batch=2000,
            poll_s=0.05,
        )

    def start(self) -> None:
        """Start following (on the loop thread: deliveries go to the running loop)."""
        self._loop = asyncio.get_running_loop()
        self.follower.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.follower.stop(timeout_s)

    def want(self, partition: int) -> asyncio.Future[None]:
        return asyncio.wrap_future(self.follower.add([partition]))

    def release(self, partition: int) -> None:
        self.follower.remove([partition], after_s=self.linger_s)

    def _handle(self, batch: list[Message]) -> None:
        """On the follower thread: decode, then hand the items to the loop in poll order."""
        items = []
        for record in batch:
            item = self._decode(record.key(), record.value())
            if item is not None:
                items.append(item)
        self.records += len(batch)
        if items:
            assert self._loop is not None, "PartitionFollower.start() was not called"
            self._loop.call_soon_threadsafe(self._deliver, items)


class ModerationFollower:
    """Reads every partition of the compacted moderation topic from the beginning, then keeps
    following. `deliver(values, replay)` runs on the loop thread with raw values in log order
    per partition (tombstones left out); `replay` is True exactly for records that were in
    the topic when the follower first read their partition (below the end it saw then).
    `start()` returns once that backlog has been delivered."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        deliver: Callable[[list[bytes], bool], None],
        *,
        name: str = "chat-moderation",
        registry: Registry | None = None,
    ) -> None:
        self.topic = topic
        self._deliver = deliver
        self._loop: asyncio.AbstractEventLoop | None = None
        self.records = 0
        self.follower = Follower(
            name, bootstrap, topic, self._handle, start=BEGINNING, registry=registry
        )

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start following; returns once the backlog was handed to the loop (`TimeoutError`
        if that takes longer than `timeout_s`; the follower keeps trying until `stop()`)."""
        self._loop = asyncio.get_running_loop()
        self.follower.start()
        if not await asyncio.to_thread(self.follower.wait_caught_up, timeout_s):
            error = self.follower.last_error
            why = f" (last error: {error})" if error else ""
            raise TimeoutError(f"could not read {self.topic} to its end in {timeout_s}s{why}")

    def stop(self, timeout_s: float = 5.0) -> None:
        self.follower.stop(timeout_s)

    def _handle(self, batch: list[Message]) -> None:
        """On the follower thread: values split into runs of equal `replay`, in order."""
        ends = self.follower.ends()
        runs: list[tuple[list[bytes], bool]] = []
        for record in batch:
            value = record.value()
            if value is None:  # tombstones carry nothing to apply
                continue
            replay = (record.offset() or 0) < ends.get(record.partition() or 0, 0)
            if runs and runs[-1][1] == replay:
                runs[-1][0].append(value)
            else:
                runs.append(([value], replay))
        if not runs:
            return
        assert self._loop is not None, "ModerationFollower.start() was not called"
        for values, replay in runs:
            self.records += len(values)
            self._loop.call_soon_threadsafe(self._deliver, values, replay)
