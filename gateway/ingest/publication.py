"""One RTMP publish feeding one stream: media in, `GopChunk`s out to `onair.ingest.gops`.

`KafkaPublication` cuts the publish's media into GOPs (`GopCutter`, continuing the stream's
sequence numbers; after a reconnect or a codec change the next GOP is marked as a
discontinuity) and hands each to its `IngestHandler` to produce. With `gop_part_ms` set, the
open GOP goes out in parts as it arrives, so transcode workers encode while it is still
arriving; the last part goes when the GOP closes. The first chunk's offset is awaited (it goes
into `StreamStarted`); later deliveries are checked as they complete, and a failed one ends
the publish. Media is taken only while the handler can prove its lease on the channel
(`IngestHandler.check_lease`, before every chunk): a fenced publish raises `LeaseLost`, and its
close sends nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from pipeline.errors import DeliveryFailed, LeaseLost
from pipeline.gop import Gop, GopCutter
from pipeline.media import CodecConfig, MediaUnit, Track
from topics.client import Delivery

if TYPE_CHECKING:
    from gateway.ingest.handler import IngestHandler, StreamState

logger = logging.getLogger(__name__)


class KafkaPublication:
    """One RTMP publish feeding one stream."""

    def __init__(self, handler: IngestHandler, state: StreamState, *, resumed: bool) -> None:
        self.handler = handler
        self.state = state
        self.cutter: GopCutter | None = None
        self._resumed = resumed
        self._pending: set[asyncio.Future[Delivery]] = set()
        self._failed: BaseException | None = None
        self._part_index = 0  # parts of the open GOP sent so far
        self._part_start_dts = 0
        self._gop_start_pts = 0

    async def on_config(self, config: CodecConfig) -> None:
        state = self.state
        if self.cutter is not None:
            last = self.cutter.flush()
            if last is not None:
                await self._publish(last)
        state.config = config
        self.cutter = GopCutter(
            state.stream_id,
            config,
            next_sequence=state.next_sequence,
            limits=self.handler.gop_limits,
            release_parts=True,
        )
        if self._resumed or state.next_sequence > 0:
            self.cutter.mark_discontinuity()

    async def on_media(self, unit: MediaUnit) -> None:
        if self._failed is not None:
            raise DeliveryFailed(f"stream {self.state.stream_id}: {self._failed}")
        self.handler.check_lease(self.state)
        if self.cutter is None:
            return
        gop = self.cutter.push(unit)
        if gop is not None:
            await self._publish(gop)
        elif self.handler.gop_part_ms > 0 and unit.track is Track.VIDEO:
            await self._maybe_send_part(unit)

    async def _maybe_send_part(self, unit: MediaUnit) -> None:
        """Low latency: hand the open GOP's units to the workers every `gop_part_ms`, so they
        encode while the GOP is still arriving (the last part goes when the GOP closes)."""
        cutter = self.cutter
        assert cutter is not None
        sequence = cutter.open_sequence
        if sequence is None:
            return
        if self._part_index == 0:
            self._part_start_dts = unit.dts_90k
        elif unit.dts_90k - self._part_start_dts < self.handler.gop_part_ms * 90:
            return
        units = cutter.take_part()
        if not units:
            return
        head = Gop(
            stream_id=self.state.stream_id,
            sequence=sequence,
            config=cutter.config,
            units=tuple(units),
            start_pts_90k=units[0].pts_90k if self._part_index == 0 else self._gop_start_pts,
            duration_90k=0,
            discontinuity=cutter.open_discontinuity,
        )
        if self._part_index == 0:
            self._gop_start_pts = head.start_pts_90k
        self._part_start_dts = unit.dts_90k
        await self._send(head, part_index=self._part_index, last_part=False)
        self._part_index += 1

    async def on_metadata(self, metadata: dict[str, object]) -> None:
        title = metadata.get("title")
        if isinstance(title, str):
            self.state.title = title[:200]

    async def _publish(self, gop: Gop) -> None:
        """A GOP closed: send it whole, or its last part when parts of it went out already."""
        self.state.next_sequence = gop.sequence + 1
        if gop.close_reason in ("max_duration", "max_bytes"):
            self.handler.gop_cuts.labels(gop.close_reason).inc()
        part_index, self._part_index = self._part_index, 0
        if part_index > 0:
            assert self.cutter is not None
            gop = replace(gop, units=tuple(self.cutter.unsent(gop)))
        await self._send(gop, part_index=part_index, last_part=True)

    async def _send(self, gop: Gop, *, part_index: int, last_part: bool) -> None:
        state = self.state
        future = await self.handler.publish_gop(
            state, gop, part_index=part_index, last_part=last_part
        )
        if state.first_offset < 0:
            delivery = await future  # the first chunk's offset goes into StreamStarted
            state.gops_partition, state.first_offset = delivery.partition, delivery.offset
            await self.handler.announce(state)
            return
        self._pending.add(future)
        future.add_done_callback(self._delivered)

    def _delivered(self, future: asyncio.Future[Delivery]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            logger.error("stream %s: GOP delivery failed: %s", self.state.stream_id, error)
            self._failed = error
        else:
            self.state.last_offset = max(self.state.last_offset, future.result().offset)

    async def close(self, reason: str) -> None:
        if self.cutter is not None and self._failed is None and self.state.fenced is None:
            last = self.cutter.flush()
            if last is not None:
                with contextlib.suppress(LeaseLost):  # fenced meanwhile: not ours to send
                    await self._publish(last)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.handler.disconnected(self.state, reason)
