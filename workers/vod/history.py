"""A stream's story read back from Kafka: its lifecycle events (`read_stream_history()`), its
channel's title at the start (`channel_info_at()`), both bounded reads (`topics.reader.read`:
to the ends the topic had when reading began), and its SegmentReady events
(`collect_segments()`, a `topics.reader.Reader` polled until every end marker is in)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException

from pipeline.errors import CodecError
from schemas.codec import Codec
from topics.reader import BEGINNING, Reader, Start, read
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
    the partitions are read from their beginning. `partition` with `until_offset`: only that
    partition, up to that offset (inclusive). Raises `TimeoutError` when nothing arrives for
    `timeout_s` before the end."""
    codec = codec or Codec()
    parts = stream_id_parts(stream_id)
    since = parts[1] - 600_000 if parts else None
    channel = parts[0].encode() if parts else None
    history = StreamHistory(stream_id)
    stop_at = None
    if partition is not None and until_offset is not None:
        stop_at = {partition: until_offset + 1}
    records = read(
        bootstrap,
        topic,
        partitions=None if partition is None else [partition],
        start=BEGINNING if since is None else Start.at_time(since),
        stop_at=stop_at,
        idle_timeout_s=timeout_s,
    )
    for msg in records:
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
    return history


def channel_info_at(
    bootstrap: str, channel: str, at_ms: int, timeout_s: float = 10.0
) -> tuple[str | None, str | None]:
    """The channel's title and category as they were at `at_ms`, from onair.channels (the
    newest version written before then that compaction has kept); (None, None) if unknown:
    also when the topic cannot be read (nothing for `timeout_s`, or no such topic)."""
    codec = Codec()
    best: tuple[str | None, str | None] = (None, None)
    try:
        for msg in read(bootstrap, CHANNELS, idle_timeout_s=timeout_s):
            if msg.key() != channel.encode() or msg.value() is None:
                continue
            try:
                record = codec.expect("Channel", msg.value())
            except CodecError:
                continue
            if record["updated_ms"] <= at_ms:
                best = (record.get("title"), record.get("category"))
    except (TimeoutError, KafkaException) as exc:
        logger.warning("channel %s: title at stream start unknown: %s", channel, exc)
        return (None, None)
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
    with Reader(bootstrap, topic) as reader:
        start = BEGINNING if since_ms is None else Start.at_time(since_ms)
        reader.assign(reader.locate(reader.partitions(timeout_s=30), start))
        started = time.monotonic()
        while not found.complete(expected) and time.monotonic() < started + wait_s:
            if not (found.segments or found.ends) and time.monotonic() > started + first_wait_s:
                logger.warning("stream %s: no segment %.0fs after its end", stream_id, first_wait_s)
                break
            batch = reader.poll(0.2)
            for msg in batch.messages if batch is not None else ():
                if msg.key() != key:
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
                if found.complete(expected):
                    break
    if not found.complete(expected):
        missing = sorted((set(expected) or found.announced) - found.ends.keys())
        logger.warning("stream %s: no end marker from %s", stream_id, missing)
    return found
