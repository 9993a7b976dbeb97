"""The packager: turns `SegmentReady` events into live HLS playlists.

One consumer group over `onair.segments` (key stream_id, so each packager owns whole
streams). Its state — each rendition's `LiveWindow`, each stream's master variants — lives in
two `ChangelogTable`s: dicts whose changes are produced to compacted changelog topics, to the
partition of the event that caused them, so a packager that takes a partition over restores
exactly the state of the streams on it and continues the same playlists (same media
sequence, same discontinuity count).

For each event, in this order: apply it to the tables in memory; write the playlists that
changed (media first, then the master: a master never names a missing playlist); produce the
table changes and wait for their acknowledgement; commit the event's offset. A packager killed
anywhere in between leaves the event uncommitted and its changes unrecorded, so its successor
applies it again and writes the same playlists: nothing lost, nothing listed twice. A failed
write, delivery or commit ends the process (the supervisor restarts it from the committed
offset).

(This was a faust app until faust's event handling lost events: faust acks the events its
stream skips around a rebalance, and the event whose agent raised, and commits them; a
restarted packager then never saw them and its windows waited for ever. See the fresh-broker
issue note. The changelog topics and their format — JSON keys and values — are the ones the
faust tables wrote, so state carries over.)

Store layout written here:
    live/<channel>/master.m3u8               master (written once every rendition has a segment)
    live/<channel>/<rendition>/index.m3u8    live media playlist, segments as <stream_id>/N.ts
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from pipeline.errors import CodecError
from pipeline.health import Health
from pipeline.keys import live_master_key, live_media_key, live_segment_uri
from pipeline.metrics import Registry
from pipeline.playlist import (
    BandwidthMeter,
    LiveWindow,
    SegmentEntry,
    Variant,
    render_master_playlist,
)
from pipeline.store import ObjectStore
from schemas.codec import Codec
from topics.admin import ensure_topics
from topics.client import (
    CheckedProducer,
    consume,
    make_consumer,
    start_new_partitions_at_end,
)
from topics.ready import wait_for_topics
from topics.specs import PACKAGER_TABLES, SEGMENTS, changelog_topic, packager_changelogs

logger = logging.getLogger(__name__)

PLAYLIST_CACHE_CONTROL = "public, max-age=1"
M3U8 = "application/vnd.apple.mpegurl"


class ChangelogTable(MutableMapping[str, Any]):
    """A dict of JSON values whose changes go to a compacted changelog topic.

    Writes land in memory at once and are queued; `produce_changes()` sends them to the
    partition `partition` names (the source event's), and the caller flushes the producer
    before it commits the event. `restore()` reads the changelog partitions of newly assigned
    source partitions to their end; `drop()` forgets revoked ones."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.partition = 0  # the partition of the event being handled
        self._data: dict[str, Any] = {}
        self._partition_of: dict[str, int] = {}
        self._changes: dict[str, tuple[int, Any]] = {}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._partition_of[key] = self.partition
        self._changes[key] = (self.partition, value)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._changes[key] = (self._partition_of.pop(key, self.partition), None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def discard_changes(self) -> None:
        self._changes.clear()

    def produce_changes(self, producer: CheckedProducer) -> int:
        """Queue every change since the last call; → how many."""
        changes, self._changes = self._changes, {}
        for key, (partition, value) in changes.items():
            payload = None if value is None else json.dumps(value).encode()
            producer.produce(self.topic, json.dumps(key).encode(), payload, partition=partition)
        return len(changes)

    def restore(self, bootstrap: str, partitions: list[int], timeout_s: float = 60.0) -> int:
        """Load the state of `partitions` from the changelog; → records read."""
        if not partitions:
            return 0
        eof: dict[str, Any] = {"enable.partition.eof": True}
        reader = make_consumer(bootstrap, None, **eof)
        try:
            ends: dict[int, int] = {}
            for p in partitions:
                ends[p] = reader.get_watermark_offsets(TopicPartition(self.topic, p), 10)[1]
            pending = {p for p, end in ends.items() if end > 0}
            reader.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in pending])
            deadline = time.monotonic() + timeout_s
            count = 0
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.topic}: not restored within {timeout_s:.0f} s")
                msg = reader.poll(0.2)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    # the end, even when compaction removed the record just before it
                    pending.discard(msg.partition() or 0)
                    continue
                key = json.loads(msg.key() or b'""')
                value = msg.value()
                partition = msg.partition() or 0
                if value is None:
                    self._data.pop(key, None)
                    self._partition_of.pop(key, None)
                else:
                    self._data[key] = json.loads(value)
                    self._partition_of[key] = partition
                count += 1
                if (msg.offset() or 0) + 1 >= ends[partition]:
                    pending.discard(partition)
            return count
        finally:
            reader.close()

    def drop(self, partitions: set[int]) -> None:
        for key in [k for k, p in self._partition_of.items() if p in partitions]:
            self._data.pop(key, None)
            del self._partition_of[key]


@dataclass
class Packager:
    """What the packager does with one event, apart from Kafka so it reads plainly: the
    tables are any mutable mappings (`ChangelogTable`s in the worker, dicts in tests)."""

    store: ObjectStore
    windows: MutableMapping[str, Any]
    masters: MutableMapping[str, Any]
    window_size: int = 6
    registry: Registry = field(default_factory=Registry)
    codec: Codec = field(default_factory=Codec)

    def __post_init__(self) -> None:
        m = self.registry
        self.events = m.counter("onair_packager_segments_total", "SegmentReady events handled.")
        self.bad = m.counter("onair_packager_bad_events_total", "Events that could not be read.")
        self.writes = m.counter("onair_packager_playlist_writes_total", "Playlists written.")
        self.latency = m.histogram(
            "onair_packager_listed_latency_seconds",
            "From ingest closing a GOP to its segment listed in a media playlist.",
        )

    def on_event(self, value: bytes | None) -> None:
        """Apply one SegmentReady to the tables, then write what changed: the media playlist
        first, the master after (a master never names a missing playlist)."""
        media: dict[str, str] = {}
        masters: dict[str, str] = {}
        listed: list[int] = []
        self._apply(value, media, masters, listed)
        for key, text in [*media.items(), *masters.items()]:
            self._put(key, text)
        now = time.time()
        for ingest_time_ms in listed:
            self.latency.observe(max(0.0, now - ingest_time_ms / 1000))

    def _apply(
        self,
        value: bytes | None,
        media: dict[str, str],
        masters: dict[str, str],
        listed: list[int],
    ) -> None:
        try:
            record = self.codec.expect("SegmentReady", value)
        except CodecError as exc:
            self.bad.inc()
            logger.warning("packager skipped an event: %s", exc)
            return
        self.events.inc()
        stream_id, rendition, channel = record["stream_id"], record["rendition"], record["channel"]
        key = f"{stream_id}/{rendition}"
        state = self.windows.get(key)
        window = LiveWindow.from_dict(state) if state is not None else LiveWindow(self.window_size)
        if record["end_of_stream"]:
            changed = window.end_at(record["sequence"])
        else:
            changed = window.add(
                SegmentEntry(
                    sequence=record["sequence"],
                    duration_90k=record["duration_90k"],
                    uri=live_segment_uri(stream_id, record["sequence"]),
                    discontinuity=record["discontinuity"],
                    program_date_time_ms=record["program_date_time_ms"],
                    size_bytes=record["size_bytes"],
                    start_pts_90k=record["start_pts_90k"],
                )
            )
        if not changed:
            logger.debug(
                "packager: %s segment %d changes nothing (next %s, %d pending)",
                key,
                record["sequence"],
                window.next_sequence,
                len(window.pending),
            )
            return
        self.windows[key] = window.to_dict()
        if window.ended:
            logger.info("packager: %s ended with %d segments listed", key, len(window.segments))
        media[live_media_key(channel, rendition)] = window.render()
        if not record["end_of_stream"]:
            listed.append(record["ingest_time_ms"])
            text = self._update_master(record)
            if text:
                masters[live_master_key(channel)] = text

    def _update_master(self, record: dict[str, Any]) -> str | None:
        """Fold the segment into its stream's variants; → the master text when it changed."""
        stream_id = record["stream_id"]
        state: dict[str, Any] = self.masters.get(stream_id) or {"variants": {}, "written": ""}
        variant = state["variants"].get(record["rendition"]) or {
            "meter": {"peak_bps": 0, "total_bits": 0, "total_90k": 0}
        }
        meter = BandwidthMeter(**variant["meter"])
        meter.add(record["size_bytes"], record["duration_90k"])
        variant.update(
            meter=dict(
                peak_bps=meter.peak_bps, total_bits=meter.total_bits, total_90k=meter.total_90k
            ),
            width=record["width"],
            height=record["height"],
            fps=record["fps"],
            codecs=record["codecs"],
        )
        state["variants"][record["rendition"]] = variant
        expected = set(record["renditions"]) or {record["rendition"]}
        text = ""
        if expected <= set(state["variants"]):
            text = render_master_playlist(
                [
                    Variant(
                        uri=f"{name}/index.m3u8",
                        bandwidth_bps=v["meter"]["peak_bps"],
                        average_bandwidth_bps=BandwidthMeter(**v["meter"]).average_bps,
                        width=v["width"],
                        height=v["height"],
                        fps=v["fps"],
                        codecs=v["codecs"],
                        name=name,
                    )
                    for name, v in state["variants"].items()
                    if name in expected
                ]
            )
        changed = bool(text) and text != state["written"]
        if changed:
            state["written"] = text
        self.masters[stream_id] = state
        return text if changed else None

    def _put(self, key: str, text: str) -> None:
        self.store.put(key, text.encode(), content_type=M3U8, cache_control=PLAYLIST_CACHE_CONTROL)
        self.writes.inc()


@dataclass
class PackagerWorker:
    """The packager role: consume onair.segments, keep the tables, write playlists."""

    bootstrap: str
    store: ObjectStore
    group: str = "onair-packager"
    window_size: int = 6
    partitions: int = 6
    replication: int = 1
    registry: Registry = field(default_factory=Registry)
    health: Health = field(default_factory=lambda: Health("package"))
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.windows = ChangelogTable(changelog_topic(self.group, PACKAGER_TABLES[0]))
        self.masters = ChangelogTable(changelog_topic(self.group, PACKAGER_TABLES[1]))
        self.tables = (self.windows, self.masters)
        self.packager = Packager(
            self.store,
            windows=self.windows,
            masters=self.masters,
            window_size=self.window_size,
            registry=self.registry,
        )

    def run(self) -> None:
        """Consume until `stop_event`. Store, delivery and commit failures raise: the process
        exits and its successor resumes from the last committed offset."""
        self.health.starting("creating the changelog topics")
        changelogs = packager_changelogs(self.group, self.partitions)
        ensure_topics(self.bootstrap, changelogs, self.replication)
        wait_for_topics(
            self.bootstrap,
            [SEGMENTS, *(c.name for c in changelogs)],
            group=self.group,
            on_wait=self.health.starting,
        )
        self.health.starting(f"joining group {self.group}")
        consumer = make_consumer(
            self.bootstrap,
            self.group,
            topics=[SEGMENTS],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._revoked,
        )
        producer = CheckedProducer(self.bootstrap)
        logger.info("packager: consuming %s", SEGMENTS)
        try:
            consume(consumer, self.stop_event, lambda msg: self.handle(msg, consumer, producer))
        finally:
            consumer.close()

    def handle(self, msg: Message, consumer: Consumer, producer: CheckedProducer) -> None:
        partition = msg.partition() or 0
        for table in self.tables:
            table.partition = partition
        try:
            self.packager.on_event(msg.value())
        except BaseException:
            for table in self.tables:  # unrecorded: the successor applies the event again
                table.discard_changes()
            raise
        if sum(table.produce_changes(producer) for table in self.tables):
            producer.flush()
        consumer.commit(message=msg, asynchronous=False)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # a new group starts at the live edge, pinned at once (see start_new_partitions_at_end)
        start_new_partitions_at_end(consumer, partitions)
        numbers = sorted(tp.partition for tp in partitions)
        restored = sum(table.restore(self.bootstrap, numbers) for table in self.tables)
        if numbers:
            logger.info(
                "packager: assigned %s partitions %s; %d table records restored",
                SEGMENTS,
                numbers,
                restored,
            )
        self.health.ok()

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        del consumer
        gone = {tp.partition for tp in partitions}
        for table in self.tables:
            table.drop(gone)
