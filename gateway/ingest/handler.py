"""Ingest: what happens to an accepted RTMP publish, and to the stream it feeds.

`IngestHandler` checks the stream key against the channel directory (hash, constant-time),
refuses a second publisher of a channel in this process at once, and otherwise claims the
channel in the lease log (`leases.py`, rules in `lease.py`): a claim for a new stream wins only
on a free channel, so two ingests behind a balancer never both accept one key. The winner hands
the publish a `KafkaPublication` (`publication.py`) that cuts the media into GOPs and produces
one `GopChunk` per GOP to `onair.ingest.gops` (key = stream id, so a stream's GOPs stay in order
on one partition), and renews its lease (`keeper.py`) while it takes media. Media is taken only
while the lease is proven (`check_lease`); past that the publish is fenced and closed.

Lifecycle events go to `onair.streams` (key = channel). When a publisher goes away the stream
is kept open for the reconnect grace: `StreamInterrupted` is produced and the lease released
as interrupted, and the same key publishing again in time — on this ingest or on any other —
claims the lease to resume the same stream (`StreamResumed`; sequence numbers go on from the
last GOP in Kafka, the next GOP is marked as a discontinuity). When the grace runs out and
nobody resumed it — or the holder itself stopped renewing — one ingest wins the ending: an
end-of-stream marker follows the last GOP and `StreamEnded` is produced (`keeper.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from gateway.ingest.keeper import LeaseKeeper
from gateway.ingest.lease import Kind, Lease, LeaseRecord, LeaseTimings, Phase, Progress, Status
from gateway.ingest.leases import LeaseBook
from gateway.ingest.publication import KafkaPublication
from gateway.ingest.tail import read_tail
from pipeline.channels import new_stream_id
from pipeline.errors import AuthError, ChannelBusy, LeaseLost
from pipeline.gop import Gop, GopLimits
from pipeline.ladder import Ladder
from pipeline.media import CodecConfig
from pipeline.metrics import Registry
from schemas.codec import Codec
from schemas.records import end_of_stream_record, gop_to_record
from topics.channels import ChannelDirectory
from topics.client import AsyncProducer, Delivery, DeliveryError
from topics.specs import GOPS, STREAMS

logger = logging.getLogger(__name__)

INVALID_KEY = "Invalid stream key."
ALREADY_LIVE = "This channel is already live."
STILL_ENDING = "This channel's last stream is still ending; try again in a few seconds."
UNCLAIMED = "The channel could not be claimed right now; try again."


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class StreamState:
    """One stream this ingest holds the lease of, while its publisher is connected."""

    channel: str
    stream_id: str
    started_ms: int
    next_sequence: int = 0
    config: CodecConfig | None = None
    gops_partition: int = -1
    first_offset: int = -1
    last_offset: int = -1
    title: str | None = None
    lease_id: str = ""
    proven_until_s: float = 0.0  # monotonic: media is taken until then
    renewed_s: float = 0.0  # monotonic: when the last renewal was sent
    renewing: bool = False
    fenced: str | None = None  # why this ingest stopped trusting its lease

    def progress(self) -> Progress:
        return Progress(
            self.started_ms,
            self.next_sequence,
            self.gops_partition,
            self.first_offset,
            self.last_offset,
        )


@dataclass
class IngestHandler:
    producer: AsyncProducer
    channels: ChannelDirectory
    ladder: Ladder
    leases: LeaseBook  # onair.ingest.leases: who owns each channel's stream
    reconnect_grace_s: float = 5.0
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    gop_part_ms: int = 0  # >0: send each GOP in parts of this length as it arrives
    gop_limits: GopLimits = field(default_factory=GopLimits)
    registry: Registry = field(default_factory=Registry)
    codec: Codec = field(default_factory=Codec)
    streams: dict[str, StreamState] = field(default_factory=dict)  # by channel

    def __post_init__(self) -> None:
        self.keeper = LeaseKeeper(self)
        self._claiming: set[str] = set()  # channels a publish of this process is claiming
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
        m.gauge(
            "onair_ingest_leases_held", "Channel leases this ingest holds and can prove."
        ).set_function(lambda: sum(1 for s in self.streams.values() if s.fenced is None))
        self.claims_lost = m.counter(
            "onair_ingest_lease_claims_lost_total",
            "Claims of a channel this ingest wrote and the lease log gave to another.",
        )
        self.lease_ends = m.counter(
            "onair_ingest_lease_ends_total",
            "Streams this ingest ended through the lease log, by what their lease was: lapsed "
            "(its ingest stopped renewing), interrupted (the grace ran out), ending (an ender "
            "went quiet).",
            ("after",),
        )
        self.fenced = m.counter(
            "onair_ingest_fenced_publishes_total",
            "Publishes closed because this ingest could no longer prove its lease.",
        )

    async def start(self) -> None:
        """Start keeping leases: renewals, fencing, ending what nobody owns."""
        self.keeper.start()

    async def stop(self) -> None:
        """Stop the keeper (publishes should be closed first: they release their leases)."""
        await self.keeper.stop()

    # ---- a publish begins --------------------------------------------------------------------

    async def start_publish(self, app: str, stream_key: str, peer: str) -> KafkaPublication:
        del app, peer
        channel = self.channels.find_by_key(stream_key)
        if channel is None:
            self.refused.labels("bad_key").inc()
            raise AuthError(INVALID_KEY)
        if channel in self.streams or channel in self._claiming:  # one publisher per channel
            self.refused.labels("already_live").inc()  # in this process, decided at once
            raise ChannelBusy(ALREADY_LIVE)
        self._claiming.add(channel)
        try:
            return await self._start(channel)
        finally:
            self._claiming.discard(channel)

    async def _start(self, channel: str) -> KafkaPublication:
        lease = await self._settled(channel)
        now = _now_ms()
        phase = lease.phase(now) if lease is not None else Phase.FREE
        if phase in (Phase.ENDING, Phase.UNENDED):
            self.refused.labels("still_ending").inc()
            raise ChannelBusy(STILL_ENDING)
        if lease is not None and phase is not Phase.FREE:
            # resumable, or live as far as this ingest read: its holder's release may be on its
            # way (a publisher back at once, through another ingest), so the log decides
            return await self._claim(channel, lease.stream_id, lease.progress, resume=True)
        return await self._claim(channel, new_stream_id(channel, now), Progress(now), resume=False)

    async def _settled(self, channel: str) -> Lease | None:
        """The channel's lease, once a last stream nobody resumed in time is ended (by this
        ingest, or by another that is at it: waited for, within `fence_after_s`)."""
        deadline = time.monotonic() + self.timings.fence_after_s
        while True:
            lease = self.leases.get(channel)
            phase = lease.phase(_now_ms()) if lease is not None else Phase.FREE
            if lease is None or phase not in (Phase.UNENDED, Phase.ENDING):
                return lease
            if time.monotonic() >= deadline:
                return lease
            if phase is Phase.UNENDED:
                await self.keeper.end(channel, lease)
            await asyncio.sleep(0.05)

    async def _claim(
        self, channel: str, stream_id: str, progress: Progress, *, resume: bool
    ) -> KafkaPublication:
        record = self.lease_record(
            Kind.CLAIM, channel, uuid.uuid4().hex, stream_id, progress, resume=resume
        )
        try:
            decision = await self.leases.decide(record, self.timings.fence_after_s)
        except (TimeoutError, DeliveryError) as exc:
            self.refused.labels("unclaimed").inc()
            logger.warning("channel %s: claim not decided: %s", channel, exc or "timeout")
            raise ChannelBusy(UNCLAIMED) from None
        if not decision.won or decision.lease is None:
            self.claims_lost.inc()
            self.refused.labels("already_live").inc()
            raise ChannelBusy(ALREADY_LIVE)
        held = decision.lease
        state = StreamState(
            channel,
            stream_id,
            held.progress.started_ms or progress.started_ms,
            gops_partition=held.progress.gops_partition,
            first_offset=held.progress.gops_first_offset,
            lease_id=record.lease_id,
            proven_until_s=decision.sent_s + self.timings.fence_after_s,
            renewed_s=decision.sent_s,
        )
        if resume:  # on from the stream's last GOP in Kafka, wherever it was produced
            try:
                tail = await asyncio.to_thread(
                    read_tail, self.leases.bootstrap, stream_id, held.progress, codec=self.codec
                )
            except Exception as exc:  # the lease lapses unrenewed; the stream stays resumable
                self.refused.labels("unclaimed").inc()
                logger.warning("channel %s: stream %s not readable: %s", channel, stream_id, exc)
                raise ChannelBusy(UNCLAIMED) from None
            state.next_sequence, state.last_offset = tail.next_sequence, tail.last_offset
        if resume:
            try:
                await self._send_event(
                    "StreamResumed",
                    channel,
                    {
                        "stream_id": stream_id,
                        "channel": channel,
                        "resumed_ms": _now_ms(),
                        "next_sequence": state.next_sequence,
                    },
                )
            except DeliveryError as exc:  # as above: left to lapse, still resumable
                self.refused.labels("unclaimed").inc()
                logger.warning("channel %s: StreamResumed not written: %s", channel, exc)
                raise ChannelBusy(UNCLAIMED) from None
            logger.info("channel %s: stream %s resumed", channel, stream_id)
        else:
            logger.info("channel %s: stream %s publishing", channel, stream_id)
        self.streams[channel] = state  # from here on the keeper renews its lease
        self.live.set(len(self.streams))
        return KafkaPublication(self, state, resumed=resume)

    def lease_record(
        self,
        kind: Kind,
        channel: str,
        lease_id: str,
        stream_id: str,
        progress: Progress,
        *,
        resume: bool = False,
        outcome: Status | None = None,
        reason: str = "",
    ) -> LeaseRecord:
        return LeaseRecord(
            channel,
            kind,
            lease_id,
            self.leases.holder,
            stream_id,
            self.timings.ttl_ms,
            int(self.reconnect_grace_s * 1000),
            resume=resume,
            outcome=outcome,
            progress=progress,
            reason=reason,
            written_ms=_now_ms(),
        )

    # ---- media -------------------------------------------------------------------------------

    def check_lease(self, state: StreamState) -> None:
        """Raise `LeaseLost` unless this ingest can still prove it holds the stream's lease."""
        if state.fenced is None and time.monotonic() >= state.proven_until_s:
            self.fence(state, f"no lease renewal acknowledged for {self.timings.fence_after_s} s")
        if state.fenced is not None:
            raise LeaseLost(f"channel {state.channel} fenced: {state.fenced}")

    def fence(self, state: StreamState, reason: str) -> None:
        """Stop taking media for this stream: its lease can no longer be proven."""
        if state.fenced is not None:
            return
        state.fenced = reason
        self.fenced.inc()
        logger.warning(
            "channel %s: stream %s fenced (%s); its publish is closed",
            state.channel,
            state.stream_id,
            reason,
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
        while True:
            self.check_lease(state)  # right before the chunk is handed to the producer
            try:
                future = self.producer.send_nowait(GOPS, state.stream_id, value)
                break
            except BufferError:
                await asyncio.sleep(0.01)
        if last_part:
            self.gops.inc()
        self.gop_bytes.inc(len(value))
        return future

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
        self.keeper.renew_soon(state)  # the lease learns where the stream's GOPs are

    async def _send_event(self, name: str, channel: str, record: dict[str, Any]) -> None:
        await self.producer.send(STREAMS, channel, self.codec.encode(name, record))

    # ---- a publish ends ----------------------------------------------------------------------

    async def disconnected(self, state: StreamState, reason: str) -> None:
        """The publisher went away (its deliveries are settled): interrupt the stream for the
        grace and release the lease, or end it now without a grace. A fenced stream is not
        ours to interrupt or end: the ingest that takes its lapsed lease over does that."""
        if self.streams.get(state.channel) is state:
            del self.streams[state.channel]
            self.live.set(len(self.streams))
        if state.fenced is None and time.monotonic() >= state.proven_until_s:
            self.fence(state, "lease not proven when the publish ended")
        if state.fenced is not None:
            logger.info(
                "channel %s: stream %s left to whoever takes its lease over",
                state.channel,
                state.stream_id,
            )
            return
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
            outcome = Status.INTERRUPTED
        else:
            await self.write_end(
                state.channel, state.stream_id, state.next_sequence, state.config, reason
            )
            outcome = Status.ENDED
        release = self.lease_record(
            Kind.RELEASE,
            state.channel,
            state.lease_id,
            state.stream_id,
            state.progress(),
            outcome=outcome,
            reason=reason,
        )
        await self.leases.write(release)

    async def write_end(
        self,
        channel: str,
        stream_id: str,
        next_sequence: int,
        config: CodecConfig | None,
        reason: str,
    ) -> None:
        """The end-of-stream marker after the stream's last GOP, then `StreamEnded`."""
        marker = end_of_stream_record(stream_id, channel, next_sequence, config, _now_ms())
        delivery = await self.producer.send(GOPS, stream_id, self.codec.encode("GopChunk", marker))
        await self._send_event(
            "StreamEnded",
            channel,
            {
                "stream_id": stream_id,
                "channel": channel,
                "ended_ms": _now_ms(),
                "reason": reason,
                "last_sequence": next_sequence - 1,
                "gops_partition": delivery.partition,
                "gops_last_offset": delivery.offset,
            },
        )
        logger.info(
            "channel %s: stream %s ended (%s) after %d GOPs",
            channel,
            stream_id,
            reason,
            next_sequence,
        )
