"""Ingest: what happens to an accepted RTMP publish, and to the stream it feeds.

`IngestHandler` checks the stream key against the channel directory (hash, constant-time),
refuses a second publisher on a live channel, and hands the publish a `KafkaPublication`
(`publication.py`) that cuts the media into GOPs and produces one `GopChunk` per GOP to
`onair.ingest.gops` (key = stream id, so a stream's GOPs stay in order on one partition).

Lifecycle events go to `onair.streams` (key = channel). When a publisher goes away the stream
is kept open for the reconnect grace: `StreamInterrupted` (with the next sequence number) is
produced, and the same key publishing again in time — on this ingest or on any other, which
reads `onair.streams` — continues the same stream (`StreamResumed`; sequence numbers go on,
the next GOP is marked as a discontinuity). When the grace runs out and nobody resumed it, the
ingest that lost the publisher ends it: an end-of-stream marker follows the last GOP and
`StreamEnded` is produced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway.ingest.ownership import StreamOwnership
from gateway.ingest.publication import KafkaPublication
from pipeline.channels import new_stream_id
from pipeline.errors import AuthError, ChannelBusy
from pipeline.gop import Gop, GopLimits
from pipeline.ladder import Ladder
from pipeline.media import CodecConfig
from pipeline.metrics import Registry
from schemas.codec import Codec
from schemas.records import end_of_stream_record, gop_to_record
from topics.channels import ChannelDirectory
from topics.client import AsyncProducer, Delivery
from topics.specs import GOPS, STREAMS

logger = logging.getLogger(__name__)

INVALID_KEY = "Invalid stream key."
ALREADY_LIVE = "This channel is already live."


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class StreamState:
    """One live stream, kept across reconnects within the grace period."""

    channel: str
    stream_id: str
    started_ms: int
    next_sequence: int = 0
    config: CodecConfig | None = None
    gops_partition: int = -1
    first_offset: int = -1
    last_offset: int = -1
    connected: bool = True
    end_timer: asyncio.TimerHandle | None = None
    title: str | None = None


# the ingest that lost a publisher waits this much longer than the grace before ending the
# stream, so a resume produced elsewhere just before the deadline has reached it
END_MARGIN_S = 1.0


@dataclass
class IngestHandler:
    producer: AsyncProducer
    channels: ChannelDirectory
    ladder: Ladder
    reconnect_grace_s: float = 5.0
    gop_part_ms: int = 0  # >0: send each GOP in parts of this length as it arrives
    gop_limits: GopLimits = field(default_factory=GopLimits)
    ownership: StreamOwnership | None = None  # onair.streams: who holds each channel's stream
    registry: Registry = field(default_factory=Registry)
    codec: Codec = field(default_factory=Codec)
    streams: dict[str, StreamState] = field(default_factory=dict)  # by channel

    def __post_init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        m = self.registry
        self.gops = m.counter("onair_ingest_gops_total", "GOP chunks produced.")
        self.gop_bytes = m.counter("onair_ingest_gop_bytes_total", "GOP chunk bytes produced.")
        self.refused = m.counter("onair_ingest_refused_total", "Publishes refused.", ("reason",))
        self.live = m.gauge("onair_ingest_live_streams", "Streams live on this ingest.")
        self.gop_cuts = m.counter(
            "onair_ingest_gop_limit_cuts_total",
            "GOPs closed at a length or size limit (the publisher sent no keyframe in time).",
            ("reason",),
        )

    async def start_publish(self, app: str, stream_key: str, peer: str) -> KafkaPublication:
        del app, peer
        channel = self.channels.find_by_key(stream_key)
        if channel is None:
            self.refused.labels("bad_key").inc()
            raise AuthError(INVALID_KEY)
        state = self.streams.get(channel)
        if state is not None and state.connected:
            self.refused.labels("already_live").inc()
            raise ChannelBusy(ALREADY_LIVE)
        if state is None:
            state = self._resumable_elsewhere(channel)
            if state is not None:
                self.streams[channel] = state
                self.live.set(len(self.streams))
        if state is not None:  # back within the grace period: the same stream goes on
            if state.end_timer is not None:
                state.end_timer.cancel()
            state.connected = True
            await self._send_event(
                "StreamResumed",
                channel,
                {
                    "stream_id": state.stream_id,
                    "channel": channel,
                    "resumed_ms": _now_ms(),
                    "next_sequence": state.next_sequence,
                },
            )
            logger.info("channel %s: stream %s resumed", channel, state.stream_id)
            return KafkaPublication(self, state, resumed=True)
        now = _now_ms()
        state = StreamState(channel, new_stream_id(channel, now), now)
        self.streams[channel] = state
        self.live.set(len(self.streams))
        logger.info("channel %s: stream %s publishing", channel, state.stream_id)
        return KafkaPublication(self, state, resumed=False)

    def _resumable_elsewhere(self, channel: str) -> StreamState | None:
        """A stream another ingest lost less than the grace ago, as `onair.streams` says."""
        latest = self.ownership.get(channel) if self.ownership is not None else None
        if latest is None or latest["_type"] != "StreamInterrupted":
            return None
        if _now_ms() >= latest["interrupted_ms"] + latest["grace_ms"]:
            return None
        return StreamState(
            channel,
            latest["stream_id"],
            latest["started_ms"],
            next_sequence=latest["next_sequence"],
            gops_partition=latest["gops_partition"],
            first_offset=latest["gops_first_offset"],
        )

    def _resumed_elsewhere(self, state: StreamState) -> bool:
        latest = self.ownership.get(state.channel) if self.ownership is not None else None
        return (
            latest is not None
            and latest["stream_id"] == state.stream_id
            and latest["_type"] in ("StreamResumed", "StreamEnded")
        )

    async def publish_gop(
        self, state: StreamState, gop: Gop, *, part_index: int = 0, last_part: bool = True
    ) -> asyncio.Future[Delivery]:
        record = gop_to_record(
            gop,
            channel=state.channel,
            ingest_time_ms=_now_ms(),
            part_index=part_index,
            last_part=last_part,
        )
        value = self.codec.encode("GopChunk", record)
        if last_part:
            self.gops.inc()
        self.gop_bytes.inc(len(value))
        return await self._send_nowait(GOPS, state.stream_id, value)

    async def _send_nowait(self, topic: str, key: str, value: bytes) -> asyncio.Future[Delivery]:
        while True:
            try:
                return self.producer.send_nowait(topic, key, value)
            except BufferError:
                await asyncio.sleep(0.01)

    async def announce(self, state: StreamState) -> None:
        config = state.config
        assert config is not None
        rungs = self.ladder.for_source(config.width, config.height, config.fps)
        await self._send_event(
            "StreamStarted",
            state.channel,
            {
                "stream_id": state.stream_id,
                "channel": state.channel,
                "started_ms": state.started_ms,
                "width": config.width,
                "height": config.height,
                "fps": config.fps,
                "renditions": [r.label(config.fps) for r in rungs],
                "gops_partition": state.gops_partition,
                "gops_first_offset": state.first_offset,
            },
        )

    async def _send_event(self, name: str, channel: str, record: dict[str, Any]) -> None:
        await self.producer.send(STREAMS, channel, self.codec.encode(name, record))

    async def disconnected(self, state: StreamState, reason: str) -> None:
        state.connected = False
        now = _now_ms()
        grace_ms = int(self.reconnect_grace_s * 1000)
        if grace_ms > 0:
            await self._send_event(
                "StreamInterrupted",
                state.channel,
                {
                    "stream_id": state.stream_id,
                    "channel": state.channel,
                    "interrupted_ms": now,
                    "next_sequence": state.next_sequence,
                    "grace_ms": grace_ms,
                    "started_ms": state.started_ms,
                    "reason": reason,
                    "gops_partition": state.gops_partition,
                    "gops_first_offset": state.first_offset,
                },
            )
        delay = self.reconnect_grace_s + END_MARGIN_S if grace_ms > 0 else 0
        loop = asyncio.get_running_loop()
        state.end_timer = loop.call_later(
            delay, lambda: self._spawn(self.end_stream(state, reason))
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def end_all(self) -> None:
        """Shutting down: end every stream now, without waiting out the grace."""
        for state in list(self.streams.values()):
            if state.end_timer is not None:
                state.end_timer.cancel()
            state.connected = False
            await self.end_stream(state, "ingest shutdown")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def end_stream(self, state: StreamState, reason: str) -> None:
        if state.connected or self.streams.get(state.channel) is not state:
            return
        del self.streams[state.channel]
        self.live.set(len(self.streams))
        if self._resumed_elsewhere(state):
            logger.info(
                "channel %s: stream %s goes on at another ingest", state.channel, state.stream_id
            )
            return
        marker = end_of_stream_record(
            state.stream_id, state.channel, state.next_sequence, state.config, _now_ms()
        )
        delivery = await self.producer.send(
            GOPS, state.stream_id, self.codec.encode("GopChunk", marker)
        )
        await self._send_event(
            "StreamEnded",
            state.channel,
            {
                "stream_id": state.stream_id,
                "channel": state.channel,
                "ended_ms": _now_ms(),
                "reason": reason,
                "last_sequence": state.next_sequence - 1,
                "gops_partition": delivery.partition,
                "gops_last_offset": delivery.offset,
            },
        )
        logger.info(
            "channel %s: stream %s ended (%s) after %d GOPs",
            state.channel,
            state.stream_id,
            reason,
            state.next_sequence,
        )
