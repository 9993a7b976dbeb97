"""Two ingests (two `IngestHandler`s, each with its own producer and `LeaseBook`) on the real
broker, sharing one channel through `onair.ingest.leases`: a second publisher on the other
ingest is refused; two publishes at once are one accepted; a reconnect on the other ingest
within the grace resumes the stream; a holder that stops renewing is fenced, and the other
ingest ends its stream (end marker after the last GOP, `StreamEnded`) with nothing of the
fenced holder's landing after the marker; a publish after the grace ends the last stream
itself when nobody did; an ingest that starts ends what a dead one left.

Short timings: lease TTL 4 s (the holder stops taking media 2 s after its last acknowledged
renewal; its chunks are acknowledged or failed within 1.5 s), renewals every 1 s, grace 1 s."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.ingest.handler import IngestHandler
from gateway.ingest.lease import LeaseTimings, Phase
from gateway.ingest.leases import LeaseBook, producer_settings
from gateway.ingest.publication import KafkaPublication
from pipeline.errors import ChannelBusy, LeaseLost
from pipeline.ladder import DEFAULT_LADDER, Ladder
from pipeline.media import CodecConfig, MediaUnit, Track
from schemas.codec import Codec
from topics.admin import ensure_topics
from topics.channels import ChannelDirectory
from topics.client import AsyncProducer
from topics.reader import Start, read
from topics.specs import GOPS, STREAMS, all_topics
from topics.table import TableReader

pytestmark = pytest.mark.integration

TIMINGS = LeaseTimings(ttl_s=4.0, renew_s=1.0)
GRACE_S = 1.0
GOP_FRAMES = 10  # a keyframe every 10 frames at 30 fps: a GOP a third of a second long
CONFIG = CodecConfig(
    avc_config=b"\x01\x64\x00\x1e\xff\xe1\x00\x00\x01\x00\x00",
    aac_config=None,
    width=640,
    height=360,
    fps=30.0,
)


@dataclass
class Ingest:
    handler: IngestHandler
    leases: LeaseBook
    producer: AsyncProducer


@dataclass
class World:
    a: Ingest
    b: Ingest
    channels: ChannelDirectory
    streams: TableReader
    bootstrap: str
    started: list[Ingest] = field(default_factory=list)

    async def ingest(self, name: str) -> Ingest:
        """Another ingest process, as it starts: it reads the lease log from its beginning."""
        ingest = await start_ingest(self.bootstrap, self.channels, name)
        self.started.append(ingest)
        return ingest

    async def channel(self) -> tuple[str, str]:
        name = f"lease_{uuid.uuid4().hex[:8]}"
        key = await asyncio.to_thread(self.channels.create, name)
        assert key is not None
        return name, key

    async def event(self, channel: str, kind: str, timeout_s: float = 15.0) -> dict[str, Any]:
        """Wait for the channel's latest lifecycle event to be `kind`."""
        found = await asyncio.to_thread(
            self.streams.wait_for,
            lambda d: d.get(channel, {}).get("_type") == kind,
            timeout_s,
        )
        latest = self.streams.get(channel)
        assert found and latest is not None, f"{channel}: no {kind} (latest: {latest})"
        return latest


async def start_ingest(bootstrap: str, channels: ChannelDirectory, name: str) -> Ingest:
    producer = AsyncProducer(bootstrap, **producer_settings(TIMINGS))
    leases = LeaseBook(bootstrap, producer, holder=f"test-{name}-{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(leases.start)
    handler = IngestHandler(
        producer,
        channels,
        Ladder.parse(DEFAULT_LADDER),
        leases,
        reconnect_grace_s=GRACE_S,
        timings=TIMINGS,
    )
    await handler.start()
    return Ingest(handler, leases, producer)


@pytest.fixture
async def world(kafka_bootstrap: str) -> AsyncIterator[World]:
    ensure_topics(kafka_bootstrap, all_topics())
    channels = ChannelDirectory(kafka_bootstrap)
    streams = TableReader(kafka_bootstrap, STREAMS, None)
    await asyncio.gather(asyncio.to_thread(channels.start), asyncio.to_thread(streams.start))
    a = await start_ingest(kafka_bootstrap, channels, "a")
    b = await start_ingest(kafka_bootstrap, channels, "b")
    world = World(a, b, channels, streams, kafka_bootstrap)
    try:
        yield world
    finally:
        for ingest in (a, b, *world.started):
            await ingest.handler.stop()
            ingest.producer.close()
            ingest.leases.stop()
        channels.stop()
        streams.stop()


@dataclass
class Pusher:
    """Feeds one publication synthetic video: 30 fps, a keyframe every `GOP_FRAMES`."""

    publication: KafkaPublication
    frame: int = 0
    pushed_at: list[float] = field(default_factory=list)

    async def start(self) -> Pusher:
        await self.publication.on_config(CONFIG)
        return self

    async def gops(self, count: int) -> None:
        """Push until `count` more GOPs closed (the keyframe of the next one opens it)."""
        for _ in range(count * GOP_FRAMES + (1 if self.frame == 0 else 0)):
            await self.unit()

    async def unit(self) -> None:
        pts = self.frame * 3000
        keyframe = self.frame % GOP_FRAMES == 0
        self.frame += 1
        await self.publication.on_media(
            MediaUnit(Track.VIDEO, pts, pts, keyframe, b"\x00\x00\x00\x02\x09\xf0")
        )
        self.pushed_at.append(time.monotonic())


def chunks(bootstrap: str, stream_id: str, partition: int) -> list[tuple[int, dict[str, Any]]]:
    """(offset, GopChunk) of the stream, in log order."""
    codec = Codec()
    found = []
    for msg in read(bootstrap, GOPS, partitions=[partition], start=Start.at_time(0)):
        if msg.key() == stream_id.encode():
            found.append((msg.offset() or 0, codec.expect("GopChunk", msg.value())))
    return found


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def publish(ingest: Ingest, key: str) -> KafkaPublication:
    return await ingest.handler.start_publish("live", key, "127.0.0.1")


async def test_a_second_publisher_on_another_ingest_is_refused(world: World) -> None:
    channel, key = await world.channel()
    first = await Pusher(await publish(world.a, key)).start()
    await first.gops(2)
    with pytest.raises(ChannelBusy, match="already live"):
        await publish(world.b, key)
    with pytest.raises(ChannelBusy, match="already live"):
        await publish(world.a, key)  # and on the same ingest, as before
    await asyncio.sleep(TIMINGS.ttl_s)  # renewals keep the lease past its first TTL
    with pytest.raises(ChannelBusy, match="already live"):
        await publish(world.b, key)
    lease = world.b.leases.get(channel)
    assert lease is not None and lease.holder == world.a.leases.holder
    await first.gops(1)  # still taking media
    assert first.publication.state.fenced is None


@pytest.mark.parametrize("round_", range(3))
async def test_two_publishes_of_one_key_at_once_on_two_ingests_accept_exactly_one(
    world: World, round_: int
) -> None:
    channel, key = await world.channel()
    results = await asyncio.gather(
        publish(world.a, key), publish(world.b, key), return_exceptions=True
    )
    accepted = [r for r in results if isinstance(r, KafkaPublication)]
    refused = [r for r in results if isinstance(r, ChannelBusy)]
    assert (len(accepted), len(refused)) == (1, 1), results
    winner = world.a if results[0] is accepted[0] else world.b
    for ingest in (world.a, world.b):  # both ingests read the same owner from the log
        lease = ingest.leases.get(channel)
        assert lease is not None and lease.holder == winner.leases.holder
    lost = world.a.handler.claims_lost.value + world.b.handler.claims_lost.value
    assert lost >= 1  # the loser wrote its claim and read back that it lost
    await accepted[0].close("done")


async def test_a_reconnect_within_the_grace_on_the_other_ingest_resumes(world: World) -> None:
    channel, key = await world.channel()
    first = await Pusher(await publish(world.a, key)).start()
    await first.gops(3)
    stream_id = first.publication.state.stream_id
    await first.publication.close("publisher went away")
    await world.event(channel, "StreamInterrupted")
    second = Pusher(await publish(world.b, key))
    handed_over = first.publication.state.next_sequence  # 3 GOPs and the one close flushed
    assert second.publication.state.stream_id == stream_id, "the same stream goes on"
    assert second.publication.state.next_sequence == handed_over == 4
    await world.event(channel, "StreamResumed")
    second.frame = first.frame + GOP_FRAMES - first.frame % GOP_FRAMES  # a keyframe
    await second.start()
    await second.gops(2)
    await second.publication.close("publisher went away")
    last = second.publication.state.next_sequence - 1
    ended = await world.event(channel, "StreamEnded", timeout_s=GRACE_S + 10)
    assert ended["stream_id"] == stream_id and ended["last_sequence"] == last
    found = chunks(world.bootstrap, stream_id, first.publication.state.gops_partition)
    assert [c["sequence"] for _, c in found] == [*range(last + 1), last + 1]
    cuts = [c["sequence"] for _, c in found if c["discontinuity"]]
    assert cuts == [handed_over]
    assert found[-1][1]["end_of_stream"] and found[-1][0] == ended["gops_last_offset"]


async def test_a_holder_that_stops_renewing_is_fenced_and_the_other_ingest_ends_its_stream(
    world: World,
) -> None:
    channel, key = await world.channel()
    pusher = await Pusher(await publish(world.a, key)).start()
    await pusher.gops(2)
    await asyncio.sleep(TIMINGS.renew_s * 1.5)  # a renewal with the stream's offsets
    state = pusher.publication.state
    await world.a.handler.keeper.stop()  # its renewals stop, as when the broker is unreachable
    stopped_at = time.monotonic()
    with pytest.raises(LeaseLost, match="fenced"):  # it keeps pushing until it is fenced
        while True:
            await pusher.unit()
            await asyncio.sleep(0.01)
    fenced_after_s = time.monotonic() - stopped_at
    assert fenced_after_s <= TIMINGS.fence_after_s + 0.5
    assert world.a.handler.fenced.value == 1
    ended = await world.event(channel, "StreamEnded", timeout_s=TIMINGS.ttl_s + GRACE_S + 10)
    ended_after_s = time.monotonic() - stopped_at
    assert ended_after_s <= TIMINGS.ttl_s + GRACE_S + 3, ended_after_s
    assert ended["stream_id"] == state.stream_id
    assert "stopped renewing" in ended["reason"]
    ends = world.b.handler.lease_ends.labels("lapsed")
    assert await eventually(lambda: ends.value == 1), "the other ingest ended it"
    found = chunks(world.bootstrap, state.stream_id, state.gops_partition)
    complete = [c["sequence"] for _, c in found if c["last_part"] and not c["end_of_stream"]]
    assert complete == list(range(len(complete))) and len(complete) >= 2
    offset, marker = found[-1]
    assert marker["end_of_stream"] and offset == ended["gops_last_offset"]
    assert marker["sequence"] == complete[-1] + 1 == ended["last_sequence"] + 1
    assert (marker["width"], marker["height"]) == (640, 360), "the marker repeats the config"

    def free() -> bool:
        lease = world.a.leases.get(channel)
        return lease is not None and lease.phase(int(time.time() * 1000)) is Phase.FREE

    assert await eventually(free), "the ender released the lease ENDED"


async def test_a_fenced_holder_lands_nothing_after_the_end_marker(world: World) -> None:
    channel, key = await world.channel()
    pusher = await Pusher(await publish(world.a, key)).start()
    await pusher.gops(2)
    state = pusher.publication.state
    await world.a.handler.keeper.stop()
    sent: list[float] = []
    # as fast as it can until fenced: the last chunks go out just before the fence
    with pytest.raises(LeaseLost):
        while True:
            await pusher.gops(1)
            sent.append(time.monotonic())
    ended = await world.event(channel, "StreamEnded", timeout_s=TIMINGS.ttl_s + GRACE_S + 10)
    # the fenced holder tries again after the end: media, a GOP straight to Kafka, its close
    with pytest.raises(LeaseLost):
        await pusher.unit()
    cutter = pusher.publication.cutter
    assert cutter is not None
    last = cutter.flush()
    assert last is not None
    with pytest.raises(LeaseLost):
        await world.a.handler.publish_gop(state, last)
    await pusher.publication.close("connection lost")
    await asyncio.sleep(1.0)
    found = chunks(world.bootstrap, state.stream_id, state.gops_partition)
    offsets = [offset for offset, _ in found]
    assert offsets[-1] == ended["gops_last_offset"] and found[-1][1]["end_of_stream"]
    assert len(sent) >= 1, "it produced GOPs until it was fenced"
    latest = world.streams.get(channel)
    assert latest is not None and latest["_type"] == "StreamEnded", "no interrupt after the end"


async def test_a_publish_after_the_grace_ends_the_last_stream_itself_then_starts_anew(
    world: World,
) -> None:
    channel, key = await world.channel()
    for ingest in (world.a, world.b):  # nobody sweeps: the publish has to do it
        await ingest.handler.keeper.stop()
    first = await Pusher(await publish(world.a, key)).start()
    await first.gops(2)
    await first.publication.close("publisher went away")
    await world.event(channel, "StreamInterrupted")
    await asyncio.sleep(GRACE_S + 0.5)
    second = await publish(world.b, key)
    ended = await world.event(channel, "StreamEnded")
    assert ended["stream_id"] == first.publication.state.stream_id
    assert second.state.stream_id != ended["stream_id"], "a new stream"
    ends = world.b.handler.lease_ends.labels("interrupted")
    assert await eventually(lambda: ends.value == 1), "b ended it (counted once the end is out)"
    await second.close("done")


async def test_an_ingest_starting_ends_what_a_dead_one_left(world: World) -> None:
    channel, key = await world.channel()
    for ingest in (world.a, world.b):  # a dies (no renewals), b is not sweeping either
        await ingest.handler.keeper.stop()
    dead = await Pusher(await publish(world.a, key)).start()
    await dead.gops(2)
    await asyncio.sleep(TIMINGS.ttl_s + GRACE_S)  # lapsed, and the grace ran out
    latest = world.streams.get(channel)
    assert latest is not None and latest["_type"] == "StreamStarted", "nobody ended it yet"
    successor = await world.ingest("successor")
    ended = await world.event(channel, "StreamEnded", timeout_s=5)
    assert ended["stream_id"] == dead.publication.state.stream_id
    ends = successor.handler.lease_ends.labels("lapsed")
    assert await eventually(lambda: ends.value == 1), "the successor ended it"


async def test_two_reconnects_at_once_on_one_ingest_resume_once(world: World) -> None:
    channel, key = await world.channel()
    first = await Pusher(await publish(world.a, key)).start()
    await first.gops(1)
    await first.publication.close("publisher went away")
    await world.event(channel, "StreamInterrupted")
    results = await asyncio.gather(
        publish(world.b, key), publish(world.b, key), return_exceptions=True
    )
    accepted = [r for r in results if isinstance(r, KafkaPublication)]
    assert len(accepted) == 1 and isinstance(results[1], ChannelBusy), results
    assert accepted[0].state.stream_id == first.publication.state.stream_id
    await accepted[0].close("done")
