"""The transcode worker: one consumer group per rendition over `onair.ingest.gops`.

For each GOP chunk: the core (core.py) decodes + scales + encodes it into one MPEG-TS segment
and CMAF parts as they are encoded, and writes each object under its deterministic name; this
loop produces a `PartReady` (onair.parts) for every part as soon as it is stored and a
`SegmentReady` for the segment, and only then commits the chunk's offset. A chunk that fails
every attempt for another reason than Kafka or the store goes to `onair.deadletter` and is
passed (`topics.deadletter`). A worker killed at any moment leaves either an uncommitted chunk
(its successor redoes it: same object name, same sequence — the packager ignores the repeat) or
a committed one whose outputs are durable. Nothing is lost and no playlist lists a segment
twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from pipeline.errors import CodecError
from pipeline.health import Health
from pipeline.ladder import Ladder, Rendition
from pipeline.metrics import Registry
from pipeline.store import ObjectStore
from schemas.codec import Codec
from topics.client import (
    CheckedProducer,
    consume,
    make_consumer,
    start_new_partitions_at_end,
)
from topics.deadletter import DeadLetters
from topics.ready import wait_for_topics
from topics.specs import GOPS, PARTS, SEGMENTS
from workers.transcode.core import RungTranscoder

logger = logging.getLogger(__name__)

# a GOP whose last part has not come this long after its first (its ingest died) is dropped,
# so it stops holding back the partition's committed offset
OPEN_GOP_MAX_AGE_S = 120.0


def group_role(rung: Rendition) -> str:
    """The role part of the rung's consumer group (`Settings.group()` adds the prefix)."""
    return f"transcode.{rung.name}"


@dataclass
class TranscodeWorker:
    """One rung's transcode role: consume GopChunks, run them through `RungTranscoder`,
    produce each SegmentReady, commit."""

    bootstrap: str
    rung: Rendition
    ladder: Ladder
    store: ObjectStore
    preset: str = "veryfast"
    threads: int | None = None  # x264 threads; None: as `RungTranscoder` chooses
    source_passthrough: bool = False  # a rung equal to the source carries the source's video
    registry: Registry = field(default_factory=Registry)
    group: str = "onair.transcode"  # the consumer group; one per rung
    topic: str = GOPS
    instance_id: str | None = None  # static group membership: a restart takes over at once
    stop_event: threading.Event = field(default_factory=threading.Event)
    health: Health = field(default_factory=lambda: Health("transcode"))
    part_target_ms: int = 200  # CMAF parts for low-latency HLS; 0: MPEG-TS segments only
    ts_segments: bool = True  # MPEG-TS too (the classic playlists'); off: CMAF only

    def __post_init__(self) -> None:
        self._codec = Codec()
        self._committed: dict[int, int] = {}
        self._producer: CheckedProducer | None = None
        self.core = RungTranscoder(
            self.rung,
            self.ladder,
            self.store,
            preset=self.preset,
            threads=self.threads,
            source_passthrough=self.source_passthrough,
            registry=self.registry,
            part_target_90k=self.part_target_ms * 90,
            ts_segments=self.ts_segments,
            on_part=self._announce_part,
        )
        self.bad = self.core.bad  # unreadable records counted with undecodable GOPs
        self.dead_letters = DeadLetters(
            self.group, registry=self.registry, codec=self._codec, stop=self.stop_event
        )

    def run(self) -> None:
        """Consume until `stop_event` is set. Delivery or commit failures raise: the process
        exits and its successor resumes from the last committed offset."""
        config: dict[str, Any] = {}
        if self.instance_id:
            config["group.instance.id"] = self.instance_id
        wait_for_topics(
            self.bootstrap, [self.topic, SEGMENTS], group=self.group, on_wait=self.health.starting
        )
        self.health.starting(f"joining group {self.group}")
        # a new group starts at the live edge, not at the start of the replay window
        consumer = make_consumer(
            self.bootstrap,
            self.group,
            topics=[self.topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            **config,
        )
        producer = self._producer = CheckedProducer(self.bootstrap)
        logger.info("transcode %s: consuming %s", self.rung.name, self.topic)
        try:
            consume(consumer, self.stop_event, lambda msg: self.handle(msg, consumer, producer))
        finally:
            consumer.close()

    def handle(self, msg: Message, consumer: Consumer, producer: CheckedProducer) -> None:
        try:
            record = self._codec.expect("GopChunk", msg.value())
        except CodecError as exc:
            self.bad.inc()
            logger.warning(
                "transcode %s: skipped chunk at offset %s: %s", self.rung.name, msg.offset(), exc
            )
            self._commit(consumer, msg)
            return

        def work() -> None:
            position = (msg.partition() or 0, msg.offset() or 0)
            event = self.core.process(record, position=position)
            if event is not None:
                value = self._codec.encode("SegmentReady", event)
                producer.send(SEGMENTS, record["stream_id"], value)
            else:
                producer.flush()  # the chunk's PartReady records, before its commit
            self._commit(consumer, msg)

        self.dead_letters.handle(msg, producer, work, lambda: self._commit(consumer, msg))

    def _announce_part(self, record: dict[str, Any]) -> None:
        """A CMAF part is durable: its PartReady goes out now (not at the chunk's end), so
        origins wake the viewers waiting for it. Delivery is checked by the next flush,
        before any commit that passes it; a failure crashes the worker as usual."""
        if self._producer is not None:
            value = self._codec.encode("PartReady", record)
            self._producer.produce(PARTS, record["stream_id"], value)

    def _commit(self, consumer: Consumer, msg: Message) -> None:
        """Commit past `msg`, but never past the first part of a GOP still being received
        on that partition: a successor must start that GOP again from its first part."""
        partition = msg.partition() or 0
        self.core.drop_stale(OPEN_GOP_MAX_AGE_S)
        starts = self.core.open_offsets(partition)
        offset = min(starts) if starts else (msg.offset() or 0) + 1
        if offset > self._committed.get(partition, -1):
            tp = TopicPartition(msg.topic() or self.topic, partition, offset)
            consumer.commit(offsets=[tp], asynchronous=False)
            self._committed[partition] = offset

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        start_new_partitions_at_end(consumer, partitions)
        self.health.ok()  # in the group with positions set: consuming from here on

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions went to another worker: their half-received GOPs are its job now."""
        del consumer
        gone = {tp.partition for tp in partitions}
        self.core.drop_partitions(gone)
        for partition in gone:
            self._committed.pop(partition, None)
