"""The chat followers over a stand-in `Follower` (no Kafka): a wanted partition's records
reach the channel's viewers through the hub, a released one lingers, and moderation records
are flagged as replays exactly when they were below their partition's end at the start."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from concurrent.futures import Future

from confluent_kafka import Message

from gateway.chat.fanout import ClientOutbox, FanoutHub, OutboxLimits
from gateway.chat.followers import ModerationFollower, PartitionFollower
from gateway.chat.partitioner import partition_for


class StandIn:
    """What the chat followers use of a `topics.follower.Follower`, recorded."""

    def __init__(self, ends: dict[int, int] | None = None) -> None:
        self.name = "stand-in"
        self.started = False
        self.added: list[list[int]] = []
        self.removed: list[tuple[list[int], float]] = []
        self._ends = ends or {}

    def start(self) -> None:
        self.started = True

    def stop(self, timeout_s: float = 5.0) -> None:
        self.started = False

    def add(self, partitions: Iterable[int]) -> Future[None]:
        self.added.append(sorted(partitions))
        future: Future[None] = Future()
        future.set_result(None)  # assigned at once
        return future

    def remove(self, partitions: Iterable[int], after_s: float = 0.0) -> None:
        self.removed.append((sorted(partitions), after_s))

    def ends(self) -> dict[int, int]:
        return dict(self._ends)

    def wait_caught_up(self, timeout_s: float) -> bool:
        return True


def _record(partition: int, offset: int, key: bytes | None, value: bytes | None) -> Message:
    return Message(topic="t", partition=partition, offset=offset, key=key, value=value)


def _decode(key: bytes | None, value: bytes | None) -> tuple[str, str] | None:
    if key is None or value is None:
        return None  # as the service skips what it cannot decode
    return key.decode(), json.dumps({"type": "message", "text": value.decode()})


class Viewer:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def send(self, frame: str) -> None:
        parsed = json.loads(frame)
        if parsed["type"] == "batch":
            self.texts.extend(m["text"] for m in parsed["messages"])


async def test_a_wanted_partition_reaches_the_channel_viewers_in_order() -> None:
    partitions = 4
    hub = FanoutHub(coalesce_s=0.01, partitions=partitions)
    follower = PartitionFollower("unused:9092", "onair.chat", _decode, hub.publish_many, 7.0)
    stand_in = StandIn()
    follower.follower = stand_in  # type: ignore[assignment]
    hub.follower = follower  # as ChatService wires them
    follower.start()
    assert stand_in.started

    viewer = Viewer()
    outbox = ClientOutbox(viewer.send, OutboxLimits())
    writer = asyncio.create_task(outbox.run())
    await hub.join("room", outbox)
    partition = partition_for(b"room", partitions)
    assert stand_in.added == [[partition]]

    batch = [
        _record(partition, 10, b"room", b"first"),
        _record(partition, 11, b"elsewhere", b"nobody watches"),
        _record(partition, 12, b"room", None),  # undecodable: skipped
        _record(partition, 13, b"room", b"second"),
    ]
    await asyncio.to_thread(follower._handle, batch)  # as the follower thread does
    for _ in range(50):
        if len(viewer.texts) >= 2:
            break
        await asyncio.sleep(0.01)
    assert viewer.texts == ["first", "second"]
    assert follower.records == 4

    hub.leave("room", outbox)
    assert stand_in.removed == [([partition], 7.0)]  # released after the linger
    outbox.stop()
    await writer
    follower.stop()
    assert not stand_in.started


async def test_moderation_replay_flags_are_exact_per_record() -> None:
    delivered: list[tuple[list[bytes], bool]] = []
    follower = ModerationFollower(
        "unused:9092", "onair.moderation", lambda values, replay: delivered.append((values, replay))
    )
    follower.follower = StandIn(ends={0: 3, 1: 1})  # type: ignore[assignment]
    await follower.start()
    # one batch crossing both partitions' start-time ends, with a tombstone among them
    follower._handle(
        [
            _record(0, 1, b"k", b"p0@1"),
            _record(1, 0, b"k", b"p1@0"),
            _record(0, 2, b"k", b"p0@2"),
            _record(1, 1, b"k", b"p1@1"),
            _record(0, 3, b"k", None),
            _record(0, 4, b"k", b"p0@4"),
        ]
    )
    follower._handle([_record(1, 2, b"k", b"p1@2")])
    for _ in range(5):
        await asyncio.sleep(0)  # the deliveries were handed to the loop
    assert delivered == [
        ([b"p0@1", b"p1@0", b"p0@2"], True),  # below the ends {0: 3, 1: 1}
        ([b"p1@1", b"p0@4"], False),
        ([b"p1@2"], False),
    ]
    assert follower.records == 6
