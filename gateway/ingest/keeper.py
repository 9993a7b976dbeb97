"""The ingest's lease keeper: a task that, every tick, renews the leases this ingest holds,
fences the publishes whose lease it can no longer prove, and ends the streams nobody owns.

Renewing: every `renew_s` a RENEW (with the stream's progress) per held lease; each one the
broker acknowledges moves the holder's proof to its *send* time + `fence_after_s`. Fencing:
when that proof runs out (no acknowledged renewal: the broker is unreachable, or this process
was frozen), or the log says another ingest won the channel, the stream is fenced — its next
media raises `LeaseLost`, no GOP of it is produced any more, and the RTMP server closes the
publish with that reason. Ending: every channel whose lease is UNENDED (its holder lapsed and
the grace ran out, its publisher went away and nobody resumed it, or an ender went quiet) gets
an END from every ingest that notices; the one that wins reads the stream's last GOP in Kafka
(`tail.py`), writes the end marker after it and `StreamEnded` — what the holder would have
written — and releases the lease ENDED. A restarted ingest does this at start-up for whatever
its predecessor left, once its `LeaseBook` has read the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING

from gateway.ingest.lease import Kind, Lease, Phase, Status
from gateway.ingest.tail import read_tail

if TYPE_CHECKING:
    from gateway.ingest.handler import IngestHandler, StreamState

logger = logging.getLogger(__name__)

_AFTER = {Status.HELD: "lapsed", Status.INTERRUPTED: "interrupted", Status.ENDING: "ending"}


class LeaseKeeper:
    def __init__(self, handler: IngestHandler) -> None:
        self.handler = handler
        self._task: asyncio.Task[None] | None = None
        self._ending: dict[str, asyncio.Task[None]] = {}  # by channel
        self._quiet_until: dict[str, float] = {}  # a lost END: not again before (monotonic)
        self._renewals: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._ending.values(), *self._renewals) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                logger.exception("lease keeper: tick failed")
            await asyncio.sleep(self.handler.timings.tick_s)

    def tick(self) -> None:
        handler = self.handler
        now_s = time.monotonic()
        for state in list(handler.streams.values()):
            if state.fenced is not None:
                continue
            lease = handler.leases.get(state.channel)
            if now_s >= state.proven_until_s:
                handler.fence(
                    state, f"no lease renewal acknowledged for {handler.timings.fence_after_s} s"
                )
            elif not _holds(lease, state):
                handler.fence(state, "the lease log gave the channel to another ingest")
            elif now_s - state.renewed_s >= handler.timings.renew_s and not state.renewing:
                self._spawn_renewal(state)
        now_ms = int(time.time() * 1000)
        for channel, lease in handler.leases.snapshot().items():
            if lease.phase(now_ms) is not Phase.UNENDED or channel in self._ending:
                continue
            if now_s >= self._quiet_until.get(channel, 0.0):
                self._start_end(channel, lease)

    def renew_soon(self, state: StreamState) -> None:
        """Renew at the next tick (e.g. the stream's first GOP is in: its offsets matter)."""
        state.renewed_s = 0.0

    def _spawn_renewal(self, state: StreamState) -> None:
        task = asyncio.get_running_loop().create_task(self._renew(state))
        self._renewals.add(task)
        task.add_done_callback(self._renewals.discard)

    async def _renew(self, state: StreamState) -> None:
        handler = self.handler
        state.renewing = True
        state.renewed_s = time.monotonic()
        record = handler.lease_record(
            Kind.RENEW, state.channel, state.lease_id, state.stream_id, state.progress()
        )
        try:
            sent_s = await handler.leases.write(record)
        except Exception as exc:  # no proof gained; the next tick tries again
            logger.warning("channel %s: lease renewal failed: %s", state.channel, exc)
            return
        finally:
            state.renewing = False
        # sent while proven, so appended before the lease could expire (delivery is bounded
        # below the margin): the lease lives at least fence_after_s + margin from `sent_s`
        state.proven_until_s = max(state.proven_until_s, sent_s + handler.timings.fence_after_s)

    async def end(self, channel: str, lease: Lease) -> None:
        """Try to end the channel's unended stream (or wait for this ingest's try at it)."""
        task = self._ending.get(channel) or self._start_end(channel, lease)
        await asyncio.shield(task)

    def _start_end(self, channel: str, lease: Lease) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._end(channel, lease))
        self._ending[channel] = task
        task.add_done_callback(lambda _: self._ending.pop(channel, None))
        return task

    async def _end(self, channel: str, lease: Lease) -> None:
        handler = self.handler
        timings = handler.timings
        stream_id = lease.stream_id
        end_id = uuid.uuid4().hex
        record = handler.lease_record(Kind.END, channel, end_id, stream_id, lease.progress)
        try:
            decision = await handler.leases.decide(record, timings.fence_after_s)
            if not decision.won or decision.lease is None:
                # this clock ran ahead of the broker's, or another ingest is at it
                self._quiet_until[channel] = time.monotonic() + timings.renew_s
                return
            self._quiet_until.pop(channel, None)
            progress = decision.lease.progress
            tail = await asyncio.to_thread(
                read_tail, handler.leases.bootstrap, stream_id, progress, codec=handler.codec
            )
            if time.monotonic() >= decision.sent_s + timings.fence_after_s:
                logger.warning("channel %s: ending %s took too long; left", channel, stream_id)
                return
            if lease.lapsed_holder:
                reason = f"ingest {lease.holder} stopped renewing its lease"
            else:
                reason = lease.reason or "ended"
            await handler.write_end(channel, stream_id, tail.next_sequence, tail.config, reason)
            handler.lease_ends.labels(_AFTER[lease.status]).inc()
            release = handler.lease_record(
                Kind.RELEASE, channel, end_id, stream_id, progress, outcome=Status.ENDED
            )
            await handler.leases.write(release)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the END lapses after its ttl and any ingest tries again
            logger.warning(
                "channel %s: ending stream %s failed: %s: %s",
                channel,
                stream_id,
                type(exc).__name__,
                exc,
            )


def _holds(lease: Lease | None, state: StreamState) -> bool:
    """The log (not this clock) still gives the channel to this stream's lease."""
    return lease is not None and lease.lease_id == state.lease_id and lease.status is Status.HELD
