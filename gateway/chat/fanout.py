"""Chat fan-out on one chat server: coalesce per channel, and write to every viewer through a
bounded outbox.

    onair.chat ──▶ PartitionFollower (followers.py: assign() only the partitions of channels
                   with local viewers, starting at the end offset)
               ──▶ FanoutHub (loop thread: per channel, messages gathered for `coalesce_s`
                   then one `batch` frame built once for all of the channel's viewers)
               ──▶ ClientOutbox per viewer (bounded: the oldest batches go first and the viewer
                   is told by a `messages_dropped` notice; too far behind → disconnected)

The hub asks its follower for a channel's partition (`partitioner.py`) when the channel's first
local viewer joins, and releases it when the last one leaves.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.chat.followers import PartitionFollower
from gateway.chat.frames import dumps, notice_frame
from gateway.chat.partitioner import partition_for

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
            + dumps(channel)
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
