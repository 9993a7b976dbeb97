"""A stream's story read back from Kafka: its lifecycle events (`read_stream_history()`), its
channel's title at the start (`channel_info_at()`), and its SegmentReady events
(`collect_segments()`), each over `_read_partitions()` / `offsets_at()`."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from pipeline.errors import CodecError
from schemas.codec import Codec
from topics.client import make_consumer, poll_checked
from topics.specs import CHANNELS, SEGMENTS, STREAMS
from workers.vod.timeline import SegmentSet

logger = logging.getLogger(__name__)

_STAMP = re.compile(r"^(?P<channel>[a-z0-9_]{1,32})-(?P<stamp>\d{8}T\d{6}Z)-[0-9a-f]+$")


def stream_id_parts(stream_id: str) -> tuple[str, int] | None:
    """`demo-20261126T043000Z-9f2c` → ("demo", its start in ms); None for another shape."""
    match = _STAMP.match(stream_id)
    if match is None:
        return None
    moment = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return match["channel"], int(moment.timestamp() * 1000)


@dataclass
class StreamHistory:
    stream_id: str
    started: dict[str, Any] | None = None
    ended: dict[str, Any] | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def channel(self) -> str:
        for record in (self.started, self.ended):
            if record is not None:
                return str(record["channel"])
        parts = stream_id_parts(self.stream_id)
        return parts[0] if parts else ""


def _read_partitions(
    consumer: Consumer,
    topic: str,
    starts: Mapping[int, int],
    ends: Mapping[int, int],
    timeout_s: float,
) -> Iterator[Message]:
    """Every message of `topic` between the start (inclusive) and end (exclusive) offsets."""
    todo = {p for p in starts if starts[p] < ends[p]}
    if not todo:
        return
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(todo)])
    deadline = time.monotonic() + timeout_s
    while todo:
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read {topic} partitions {sorted(todo)} in {timeout_s}s")
        msg = poll_checked(consumer, 0.2)
        if msg is None:
            continue
        partition, offset = msg.partition() or 0, msg.offset() or 0
        if partition not in todo:
            continue
        if offset < ends[partition]:
            yield msg
        if offset + 1 >= ends[partition]:
            todo.discard(partition)


def offsets_at(
    consumer: Consumer, topic: str, partitions: Iterable[int], since_ms: int | None
) -> dict[int, tuple[int, int]]:
    """For each partition: (first offset at or after `since_ms`, or the low watermark when
    None; the high watermark)."""
    result: dict[int, tuple[int, int]] = {}
    parts = sorted(partitions)
    if since_ms is not None:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, max(0, since_ms)) for p in parts], timeout=10
        )
        by_partition = {tp.partition: tp.offset for tp in found}
    for partition in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        start = low
        if since_ms is not None:
            start = by_partition.get(partition, -1)
            start = high if start < 0 else max(start, low)
        result[partition] = (start, high)
    return result


def read_stream_history(
    bootstrap: str,
    stream_id: str,
    *,
    topic: str = STREAMS,
    partition: int | None = None,
    until_offset: int | None = None,
    codec: Codec | None = None,
    timeout_s: float = 60.0,
) -> StreamHistory:
    """The stream's lifecycle events from `onair.streams` (key = channel). The stream id
    tells where to start (its start time, less a margin for clock skew); without that shape,
    the partitions are read from their beginning."""
    codec = codec or Codec()
    parts = stream_id_parts(stream_id)
    since = parts[1] - 600_000 if parts else None
    channel = parts[0].encode() if parts else None
    history = StreamHistory(stream_id)
    consumer = make_consumer(bootstrap, None)
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        partitions = [partition] if partition is not None else list(metadata.partitions)
        bounds = offsets_at(consumer, topic, partitions, since)
        starts = {p: start for p, (start, _) in bounds.items()}
        ends = {p: high for p, (_, high) in bounds.items()}
        if partition is not None and until_offset is not None:
            ends[partition] = min(ends[partition], until_offset + 1)
        for msg in _read_partitions(consumer, topic, starts, ends, timeout_s):
            if channel is not None and msg.key() != channel:
                continue
            try:
                name, record = codec.decode(msg.value())
            except CodecError:
                continue
            if record.get("stream_id") != stream_id:
                continue
            if name == "StreamStarted":
                history.started = record
            elif name == "StreamEnded":
                history.ended = record
            elif name == "StreamUpdated":
                history.updates.append(record)
            elif name == "StreamResumed":
                history.resumes.append(record)
    finally:
        consumer.close()
    return history


def channel_info_at(
    bootstrap: str, channel: str, at_ms: int, timeout_s: float = 10.0
) -> tuple[str | None, str | None]:
    """The channel's title and category as they were at `at_ms`, from onair.channels (the
    newest version written before then that compaction has kept); (None, None) if unknown."""
    codec = Codec()
    consumer = make_consumer(bootstrap, None)
    best: tuple[str | None, str | None] = (None, None)
    try:
        metadata = consumer.list_topics(CHANNELS, timeout=timeout_s).topics[CHANNELS]
        bounds = offsets_at(consumer, CHANNELS, metadata.partitions, None)
        starts = {p: s for p, (s, _) in bounds.items()}
        ends = {p: e for p, (_, e) in bounds.items()}
        for msg in _read_partitions(consumer, CHANNELS, starts, ends, timeout_s):
            if msg.key() != channel.encode() or msg.value() is None:
                continue
            try:
                record = codec.expect("Channel", msg.value())
            except CodecError:
                continue
            if record["updated_ms"] <= at_ms:
                best = (record.get("title"), record.get("category"))
    except (TimeoutError, KeyError) as exc:
        logger.warning("channel %s: title at stream start unknown: %s", channel, exc)
    finally:
        consumer.close()
    return best


def collect_segments(
    bootstrap: str,
    stream_id: str,
    since_ms: int | None,
    expected: Sequence[str],
    *,
    topic: str = SEGMENTS,
    wait_s: float = 600.0,
    first_wait_s: float = 60.0,
    owned: Callable[[Mapping[str, Any]], bool] | None = None,
    codec: Codec | None = None,
) -> SegmentSet:
    """The stream's SegmentReady events, read from `since_ms` on every partition, until every
    expected rendition's end-of-stream marker is in (or `wait_s` passed: a rung whose worker
    is down must not hold the VOD forever).

    Two early exits, so that one stream cannot hold every other stream's VOD: the first
    segment fails `owned` (it is not in our store: another platform's stream on the same
    brokers) → `foreign`; no event at all for the stream within `first_wait_s` (no
    transcode worker ever took it)."""
    codec = codec or Codec()
    found = SegmentSet(stream_id)
    key = stream_id.encode()
    checked = owned is None
    consumer = make_consumer(bootstrap, None)
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        bounds = offsets_at(consumer, topic, metadata.partitions, since_ms)
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in bounds.items()])
        started = time.monotonic()
        while not found.complete(expected) and time.monotonic() < started + wait_s:
            if not (found.segments or found.ends) and time.monotonic() > started + first_wait_s:
                logger.warning("stream %s: no segment %.0fs after its end", stream_id, first_wait_s)
                break
            msg = poll_checked(consumer, 0.2)
            if msg is None or msg.key() != key:
                continue
            try:
                record = codec.expect("SegmentReady", msg.value())
            except CodecError:
                continue
            if record["stream_id"] != stream_id:
                continue
            if not checked and not record["end_of_stream"]:
                checked = True
                if owned is not None and not owned(record):
                    found.foreign = True
                    return found
            found.add(record)
    finally:
        consumer.close()
    if not found.complete(expected):
        missing = sorted((set(expected) or found.announced) - found.ends.keys())
        logger.warning("stream %s: no end marker from %s", stream_id, missing)
    return found
