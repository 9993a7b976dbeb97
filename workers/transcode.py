"""The transcode worker: one consumer group per rendition over `onair.ingest.gops`.

For each GOP chunk: decode + scale + encode it into one MPEG-TS segment (workers/encoder.py),
write the segment object under its deterministic name, produce `SegmentReady`, and only then
commit the chunk's offset. A worker killed at any moment leaves either an uncommitted chunk
(its successor redoes it: same object name, same sequence — the packager ignores the repeat)
or a committed one whose outputs are durable. Nothing is lost and no playlist lists a segment
twice.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from pipeline.errors import CodecError, MediaError
from pipeline.health import Health
from pipeline.keys import segment_key
from pipeline.ladder import Ladder, Rendition
from pipeline.metrics import Registry
from pipeline.store import ObjectStore
from schemas.codec import Codec
from schemas.records import gop_from_record
from topics.client import (
    CheckedProducer,
    consume,
    make_consumer,
    start_new_partitions_at_end,
)
from topics.ready import wait_for_topics
from topics.specs import GOPS, SEGMENTS
from workers.encoder import EncodedSegment, GopEncoding, GopTranscoder

logger = logging.getLogger(__name__)

SEGMENT_CACHE_CONTROL = "public, max-age=31536000, immutable"
# a GOP whose last part has not come this long after its first (its ingest died) is dropped,
# so it stops holding back the partition's committed offset
OPEN_GOP_MAX_AGE_S = 120.0


def group_role(rung: Rendition) -> str:
    """The role part of the rung's consumer group (`Settings.group()` adds the prefix)."""
    return f"transcode.{rung.name}"


@dataclass
class TranscodeWorker:
    bootstrap: str
    rung: Rendition
    ladder: Ladder
    store: ObjectStore
    preset: str = "veryfast"
    # the tallest rungs are a live GOP's critical path: let x264 slice them over two threads
    # (zerolatency sliced threads add no delay); the smaller rungs fill the other core
    threads: int | None = None
    registry: Registry = field(default_factory=Registry)
    group: str = "onair.transcode"  # the consumer group; one per rung
    topic: str = GOPS
    instance_id: str | None = None  # static group membership: a restart takes over at once
    stop_event: threading.Event = field(default_factory=threading.Event)
    health: Health = field(default_factory=lambda: Health("transcode"))

    def __post_init__(self) -> None:
        self._codec = Codec()
        self._open: dict[str, _OpenGop] = {}  # GOPs arriving in parts, by stream
        self._committed: dict[int, int] = {}
        threads = self.threads or (2 if self.rung.height >= 720 else 1)
        self._transcoder = GopTranscoder(self.rung, preset=self.preset, threads=threads)
        m, rung, by_rung = self.registry, self.rung.name, ("rendition",)
        self.segments = m.counter(
            "onair_transcode_segments_total", "Segments written.", by_rung
        ).labels(rung)
        self.skipped = m.counter(
            "onair_transcode_skipped_total", "Chunks for streams this rung skips.", by_rung
        ).labels(rung)
        self.bad = m.counter(
            "onair_transcode_bad_chunks_total", "Chunks that could not be read.", by_rung
        ).labels(rung)
        self.encode_seconds = m.histogram(
            "onair_transcode_seconds", "GOP decode+encode time.", by_rung
        ).labels(rung)

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
        producer = CheckedProducer(self.bootstrap)
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
        event = self.process(record, position=(msg.partition() or 0, msg.offset() or 0))
        if event is not None:
            producer.send(SEGMENTS, record["stream_id"], self._codec.encode("SegmentReady", event))
        self._commit(consumer, msg)

    def _commit(self, consumer: Consumer, msg: Message) -> None:
        """Commit past `msg`, but never past the first part of a GOP still being received
        on that partition: a successor must start that GOP again from its first part."""
        partition = msg.partition() or 0
        stale = time.monotonic() - OPEN_GOP_MAX_AGE_S
        for stream_id in [k for k, g in self._open.items() if g.opened_at < stale]:
            logger.warning("transcode %s: stream %s GOP never completed; dropped",
                           self.rung.name, stream_id)  # fmt: skip
            del self._open[stream_id]
        starts = [g.first_offset for g in self._open.values() if g.partition == partition]
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
        for stream_id in [k for k, g in self._open.items() if g.partition in gone]:
            del self._open[stream_id]
        for partition in gone:
            self._committed.pop(partition, None)

    def process(
        self, record: dict[str, Any], position: tuple[int, int] = (0, 0)
    ) -> dict[str, Any] | None:
        """One chunk → the SegmentReady record to produce (its object already durable), or
        None when this rung does not apply to the stream or the GOP is not complete yet.
        `position` (partition, offset) of a GOP's first part bounds what may be committed."""
        width, height, fps = record["width"], record["height"], record["fps"]
        rungs = self.ladder.for_source(width, height, fps) if record["height"] else []
        labels = [r.label(fps) for r in rungs]
        label = self.rung.label(fps)
        base = {
            "stream_id": record["stream_id"],
            "channel": record["channel"],
            "rendition": label,
            "sequence": record["sequence"],
            "ingest_time_ms": record["ingest_time_ms"],
            "renditions": labels,
            "discontinuity": record["discontinuity"],
        }
        if self.rung not in rungs:
            self.skipped.inc()
            return None
        if record["end_of_stream"]:
            self._open.pop(record["stream_id"], None)
            return {**base, **_EMPTY, "end_of_stream": True, "program_date_time_ms": 0}
        if record["part_index"] > 0 or not record["last_part"]:
            return self._part(record, base, position)
        gop = gop_from_record(record)
        started = time.perf_counter()
        try:
            segment = self._transcoder.transcode(gop)
        except MediaError as exc:
            self.bad.inc()
            logger.warning(
                "transcode %s: stream %s GOP %d: %s",
                self.rung.name,
                gop.stream_id,
                gop.sequence,
                exc,
            )
            return None
        self.encode_seconds.observe(time.perf_counter() - started)
        return self._written(base, gop.start_pts_90k, gop.duration_90k, segment)

    def _part(
        self, record: dict[str, Any], base: dict[str, Any], position: tuple[int, int]
    ) -> dict[str, Any] | None:
        """A GOP arriving in parts: encode each part now; the segment when the last comes."""
        stream_id, sequence, index = record["stream_id"], record["sequence"], record["part_index"]
        head = gop_from_record(record)
        started = time.perf_counter()
        try:
            if index == 0:
                self._open[stream_id] = _OpenGop(
                    sequence, self._transcoder.begin(head), *position, record["start_pts_90k"]
                )
            current = self._open.get(stream_id)
            if current is None or (current.sequence, current.next_part) != (sequence, index):
                # its first part came before this worker's start: a predecessor finished it
                self._open.pop(stream_id, None)
                return None
            current.encoding.feed(head.units)
            current.next_part += 1
            current.seconds += time.perf_counter() - started
            if not record["last_part"]:
                return None
            del self._open[stream_id]
            started = time.perf_counter()
            segment = current.encoding.finish(record["duration_90k"])
        except MediaError as exc:
            self._open.pop(stream_id, None)
            self.bad.inc()
            logger.warning(
                "transcode %s: stream %s GOP %d: %s", self.rung.name, stream_id, sequence, exc
            )
            return None
        self.encode_seconds.observe(current.seconds + time.perf_counter() - started)
        return self._written(base, current.start_pts_90k, record["duration_90k"], segment)

    def _written(
        self, base: dict[str, Any], start_pts_90k: int, duration_90k: int, segment: EncodedSegment
    ) -> dict[str, Any]:
        """Store the segment under its deterministic name → its SegmentReady record."""
        key = segment_key(base["stream_id"], base["rendition"], base["sequence"])
        self.store.put(
            key, segment.data, content_type="video/mp2t", cache_control=SEGMENT_CACHE_CONTROL
        )
        self.segments.inc()
        return {
            **base,
            "key": key,
            "start_pts_90k": start_pts_90k,
            "duration_90k": segment.duration_90k,
            "size_bytes": len(segment.data),
            "bitrate_bps": segment.bitrate_bps,
            "width": segment.width,
            "height": segment.height,
            "fps": segment.fps,
            "codecs": segment.codecs,
            "program_date_time_ms": base["ingest_time_ms"] - duration_90k // 90,
            "end_of_stream": False,
        }


@dataclass
class _OpenGop:
    sequence: int
    encoding: GopEncoding
    partition: int
    first_offset: int
    start_pts_90k: int
    next_part: int = 0
    seconds: float = 0.0
    opened_at: float = field(default_factory=time.monotonic)


_EMPTY = {
    "key": "",
    "start_pts_90k": 0,
    "duration_90k": 0,
    "size_bytes": 0,
    "bitrate_bps": 0,
    "width": 0,
    "height": 0,
    "fps": 0.0,
    "codecs": "",
}
