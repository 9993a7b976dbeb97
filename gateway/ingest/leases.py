"""This ingest's side of `onair.ingest.leases`: the log followed into a `Lease` per channel, and
the records this ingest writes to it.

`LeaseBook` follows the topic from its beginning with a `topics.follower.Follower` and folds
every record with `lease.apply()` at the record's append time; `start()` returns once it has
read what the topic held then, so a restarted ingest knows every lease (and every stream left
unended) before it accepts a publish. `decide()` writes a CLAIM or an END and waits until the
follower has read that very record back: the fold says whether it won, the same answer every
other ingest gets. `write()` sends a RENEW or RELEASE and returns once the broker acknowledged
it, with the moment it was sent (the holder's proof of its lease is measured from there).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from gateway.ingest.lease import (
    SCHEMA,
    Kind,
    Lease,
    LeaseRecord,
    LeaseTimings,
    apply,
    from_avro,
    to_avro,
)
from pipeline.errors import CodecError
from pipeline.metrics import Registry
from schemas.codec import Codec
from topics.client import AsyncProducer
from topics.follower import Follower
from topics.reader import BEGINNING
from topics.ready import wait_for_topics
from topics.specs import INGEST_LEASES

logger = logging.getLogger(__name__)

Outcome = tuple[bool, Lease | None]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the log made of a CLAIM or END: `won`, the channel's lease after it, and when
    (monotonic) the record was sent."""

    won: bool
    lease: Lease | None
    sent_s: float


class LeaseBook:
    def __init__(
        self,
        bootstrap: str,
        producer: AsyncProducer,
        *,
        holder: str,
        registry: Registry | None = None,
        codec: Codec | None = None,
        topic: str = INGEST_LEASES,
    ) -> None:
        self.bootstrap = bootstrap
        self.holder = holder  # this ingest process, as its records name it
        self.topic = topic
        self._producer = producer
        self._codec = codec or Codec()
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[Outcome]]] = {}
        self.skipped = 0
        self.follower = Follower(
            "ingest-leases", bootstrap, topic, self._apply_batch, start=BEGINNING, registry=registry
        )

    def start(self, timeout_s: float = 30.0) -> None:
        """Read the topic to its end (blocking: call it from a thread), then follow it."""
        wait_for_topics(self.bootstrap, [self.topic])
        self.follower.start()
        if not self.follower.wait_caught_up(timeout_s):
            error = self.follower.last_error
            self.follower.stop()
            why = f" (last error: {error})" if error else ""
            raise TimeoutError(f"could not read {self.topic} to its end in {timeout_s}s{why}")

    def stop(self) -> None:
        self.follower.stop()

    def get(self, channel: str) -> Lease | None:
        with self._lock:
            return self._leases.get(channel)

    def snapshot(self) -> dict[str, Lease]:
        with self._lock:
            return dict(self._leases)

    async def decide(self, record: LeaseRecord, timeout_s: float) -> Decision:
        """Write a CLAIM or END and wait (up to `timeout_s`) to read it back. Raises
        `TimeoutError`, or `DeliveryError` when the broker did not take it."""
        assert record.kind in (Kind.CLAIM, Kind.END), record.kind
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Outcome] = loop.create_future()
        with self._lock:  # before sending: the follower may read it back before the ack
            self._waiting[record.lease_id] = (loop, outcome)
        try:
            sent_s = await self.write(record)
            won, lease = await asyncio.wait_for(outcome, timeout_s)
        finally:
            with self._lock:
                self._waiting.pop(record.lease_id, None)
        return Decision(won, lease, sent_s)

    async def write(self, record: LeaseRecord) -> float:
        """Send one record; → when it was sent (monotonic), once the broker acknowledged it."""
        value = self._codec.encode(SCHEMA, to_avro(record))
        sent_s = time.monotonic()
        await self._producer.send(self.topic, record.channel, value)
        return sent_s

    def _apply_batch(self, messages: list[Message]) -> None:
        for msg in messages:
            self._apply(msg)

    def _apply(self, msg: Message) -> None:
        value = msg.value()
        if value is None:  # a tombstone: the channel's lease is forgotten
            with self._lock:
                self._leases.pop((msg.key() or b"").decode("utf-8", "replace"), None)
            return
        try:
            record = from_avro(self._codec.expect(SCHEMA, value))
        except (CodecError, ValueError) as exc:
            self.skipped += 1
            logger.warning("skipped a record in %s at offset %s: %s", self.topic, msg.offset(), exc)
            return
        kind, stamp = msg.timestamp()
        at_ms = stamp if kind != TIMESTAMP_NOT_AVAILABLE and stamp > 0 else record.written_ms
        with self._lock:
            lease, took = apply(self._leases.get(record.channel), record, at_ms)
            if lease is None:
                self._leases.pop(record.channel, None)
            else:
                self._leases[record.channel] = lease
            claim = record.kind in (Kind.CLAIM, Kind.END)
            waiter = self._waiting.pop(record.lease_id, None) if claim else None
        if claim:  # quiet while replaying the log at start-up
            logger.log(
                logging.INFO if self.follower.caught_up.is_set() else logging.DEBUG,
                "channel %s: %s of stream %s by %s %s",
                record.channel,
                record.kind.value,
                record.stream_id,
                record.holder,
                "won" if took else "lost",
            )
        if waiter is not None:
            loop, future = waiter
            loop.call_soon_threadsafe(_settle, future, (took, lease))


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


def producer_settings(timings: LeaseTimings) -> dict[str, Any]:
    """The ingest producer's bounds: every chunk is acknowledged or given up on within
    `delivery_timeout_s`, inside the lease's margin, so none lands after another ingest could
    have ended its stream."""
    timeout_ms = int(timings.delivery_timeout_s * 1000)
    return {"message.timeout.ms": timeout_ms, "request.timeout.ms": timeout_ms}
