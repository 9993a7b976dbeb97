"""The VOD worker: the Kafka loop over `onair.streams` that, when a stream ends, reads its
story, builds its VOD and produces the catalog record to `onair.vods`, then commits.

Its followers — the catalog table (`table:onair.vods`) and the live prefetch
(`vod-prefetch`) — are watched by the worker's `Health` and report to its registry."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from pipeline.errors import CodecError, MediaError
from pipeline.health import Health
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
from topics.frontier import OffsetFrontier
from topics.ready import wait_for_topics
from topics.specs import STREAMS, VODS
from topics.table import TableReader
from workers.vod.builder import VodBuilder
from workers.vod.history import (
    channel_info_at,
    collect_segments,
    read_stream_history,
    stream_id_parts,
)
from workers.vod.spool import Prefetcher, SegmentSpool
from workers.vod.thumbnails import THUMB_INTERVAL_S

logger = logging.getLogger(__name__)

GROUP = "onair.vod"  # the CLI passes Settings.group("vod")


def _log_assignment(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    del consumer
    logger.info("vod: assigned %s partitions %s", STREAMS, [p.partition for p in partitions])


@dataclass
class VodWorker:
    bootstrap: str
    store: ObjectStore
    spool_dir: str | Path
    registry: Registry = field(default_factory=Registry)
    group: str = GROUP
    instance_id: str | None = None
    thumbnail_interval_s: float = THUMB_INTERVAL_S
    segment_wait_s: float = 600.0
    prefetch: bool = True
    parallel_builds: int = 2  # VODs built at once: a long one does not hold up the others
    build_attempts: int = 2  # tries before a StreamEnded goes to onair.deadletter
    stop_event: threading.Event = field(default_factory=threading.Event)
    health: Health = field(default_factory=lambda: Health("vod"))

    def __post_init__(self) -> None:
        self._codec = Codec()
        self.spool = SegmentSpool(self.spool_dir)
        self.builder = VodBuilder(
            self.store, self.spool, thumbnail_interval_s=self.thumbnail_interval_s
        )
        m = self.registry
        self.built = m.counter("onair_vod_built_total", "VODs written.", ("status",))
        self.bad = m.counter(
            "onair_vod_bad_events_total", "Lifecycle events that could not be read."
        )
        self.build_seconds = m.histogram(
            "onair_vod_build_seconds",
            "From picking up StreamEnded to the catalog record.",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
        )
        self.prefetcher: Prefetcher | None = None
        self.frontier = OffsetFrontier()
        self.dead_letters = DeadLetters(
            self.group,
            attempts=self.build_attempts,
            registry=self.registry,
            codec=self._codec,
            stop=self.stop_event,
        )
        self._pool = ThreadPoolExecutor(self.parallel_builds, thread_name_prefix="vod-build")
        self._jobs: dict[Future[None], tuple[int, int]] = {}
        self._local = threading.local()

    def run(self) -> None:
        """Consume onair.streams until `stop_event`; a failed store write, delivery or commit
        raises, and the successor redoes the stream (every output is overwritten alike)."""
        extra: dict[str, Any] = {
            "max.poll.interval.ms": int((self.segment_wait_s + 900) * 1000),
            # a new group starts at the end: StreamEnded events from before the VOD worker
            # existed are not turned into VODs (their segments may be long gone)
            "auto.offset.reset": "latest",
        }
        if self.instance_id:
            extra["group.instance.id"] = self.instance_id
        wait_for_topics(
            self.bootstrap, [STREAMS, VODS], group=self.group, on_wait=self.health.starting
        )
        self.health.starting("reading the VOD catalog")
        catalog = TableReader(self.bootstrap, VODS, "Vod", self._codec, registry=self.registry)
        self.health.watch(catalog.follower.name, catalog.follower.probe)
        catalog.start()
        self.health.starting(f"joining group {self.group}")
        consumer = make_consumer(
            self.bootstrap,
            self.group,
            topics=[STREAMS],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._revoked,
            **extra,
        )
        producer = CheckedProducer(self.bootstrap)
        self.spool.sweep(max_age_s=48 * 3600)
        if self.prefetch:
            self.prefetcher = Prefetcher(
                self.bootstrap, self.store, self.spool, registry=self.registry
            )
            follower = self.prefetcher.follower
            self.health.watch(follower.name, follower.probe)
            self.prefetcher.start()
        logger.info("vod: consuming %s", STREAMS)
        try:
            consume(
                consumer,
                self.stop_event,
                lambda msg: self.handle(msg, consumer, producer, catalog),
                on_idle=lambda: self.settle(consumer),
            )
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self.prefetcher is not None:
                self.prefetcher.stop()
            catalog.stop()
            consumer.close()

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # pinned at the end at once: a worker killed before its first commit leaves its
        # successor that position, not "latest" then (StreamEnded in between would be lost)
        start_new_partitions_at_end(consumer, partitions)
        _log_assignment(consumer, partitions)
        self.health.ok()

    def handle(
        self, msg: Message, consumer: Consumer, producer: CheckedProducer, catalog: TableReader
    ) -> None:
        """Take one lifecycle event: a `StreamEnded` that needs a VOD starts a build in the
        background (`parallel_builds` at once), everything else is done at once. What may be
        committed is settled by `settle()`."""
        del consumer
        partition, offset = msg.partition() or 0, msg.offset() or 0
        self.frontier.take(partition, offset)
        try:
            name, record = self._codec.decode(msg.value())
        except CodecError as exc:
            self.bad.inc()
            logger.warning("vod: skipped event at offset %s: %s", offset, exc)
            self.frontier.finish(partition, offset)
            return
        stream_id = record.get("stream_id", "")
        if name in ("StreamStarted", "StreamResumed") and self.prefetcher is not None:
            self.prefetcher.want(stream_id)
        elif name == "StreamEnded":
            done = catalog.get(stream_id)
            if done is not None and done.get("status") == "complete":
                logger.info("vod: stream %s already has a complete VOD", stream_id)
            elif record["last_sequence"] < 0:
                logger.info("vod: stream %s ended without media; no VOD", stream_id)
            else:
                job = self._pool.submit(self._build, msg, record)
                self._jobs[job] = (partition, offset)
                return
            self._forget(stream_id)
        self.frontier.finish(partition, offset)

    def settle(self, consumer: Consumer) -> None:
        """Finished builds: a failure of Kafka or the store ends the role (its successor
        rebuilds from the committed offset); then commit each partition up to its first
        unfinished event."""
        for job in [j for j in self._jobs if j.done()]:
            partition, offset = self._jobs.pop(job)
            job.result()  # re-raises what the build could not get past
            self.frontier.finish(partition, offset)
        moved = self.frontier.advance()
        if moved:
            consumer.commit(
                offsets=[TopicPartition(STREAMS, p, o) for p, o in moved.items()],
                asynchronous=False,
            )

    def _build(self, msg: Message, ended: dict[str, Any]) -> None:
        """One stream's VOD, on a build thread: retried, dead-lettered if it keeps failing."""
        stream_id = ended["stream_id"]
        producer = self._thread_producer()

        def work() -> None:
            try:
                vod = self.make_vod(ended, msg.partition() or 0, msg.offset() or 0)
            except MediaError as exc:  # e.g. no rendition has any segment: nothing to show
                logger.error("vod: stream %s has no VOD: %s", stream_id, exc)
                self.built.labels("failed").inc()
                vod = None
            if vod is not None:
                producer.send(VODS, stream_id, self._codec.encode("Vod", vod))

        try:
            self.dead_letters.handle(msg, producer, work, lambda: None)
        finally:
            self._forget(stream_id)

    def _thread_producer(self) -> CheckedProducer:
        producer: CheckedProducer | None = getattr(self._local, "producer", None)
        if producer is None:
            producer = self._local.producer = CheckedProducer(self.bootstrap)
        return producer

    def _forget(self, stream_id: str) -> None:
        if self.prefetcher is not None:
            self.prefetcher.forget(stream_id)
        self.spool.drop(stream_id)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Their StreamEnded events are another worker's now: builds still running finish
        (their outputs are overwritten alike) but commit nothing here."""
        del consumer
        self.frontier.forget(tp.partition for tp in partitions)

    def make_vod(self, ended: dict[str, Any], partition: int, offset: int) -> dict[str, Any] | None:
        started_at = time.perf_counter()
        stream_id = ended["stream_id"]
        history = read_stream_history(
            self.bootstrap, stream_id, partition=partition, until_offset=offset, codec=self._codec
        )
        history.ended = ended
        started = history.started or {}
        expected = list(started.get("renditions") or [])
        since = started.get("started_ms") or (stream_id_parts(stream_id) or ("", 0))[1]
        segments = collect_segments(
            self.bootstrap,
            stream_id,
            since - 60_000 if since else None,
            expected,
            wait_s=self.segment_wait_s,
            owned=lambda record: self.store.exists(record["key"]),
            codec=self._codec,
        )
        if segments.foreign:
            logger.warning("vod: stream %s has no segment in this store; no VOD", stream_id)
            return None
        logger.info(
            "vod: stream %s: %d segments in %s collected after %.1fs",
            stream_id,
            sum(len(v) for v in segments.segments.values()),
            ", ".join(sorted(segments.segments)),
            time.perf_counter() - started_at,
        )
        initial = channel_info_at(self.bootstrap, history.channel, since or ended["ended_ms"])
        vod = self.builder.build(history, segments, expected=expected, initial=initial)
        elapsed = time.perf_counter() - started_at
        self.build_seconds.observe(elapsed)
        self.built.labels(vod["status"]).inc()
        logger.info(
            "vod: stream %s %s in %.1fs: %d segments, %.0fs, %s",
            stream_id,
            vod["status"],
            elapsed,
            vod["segment_count"],
            vod["duration_ms"] / 1000,
            ", ".join(vod["renditions"]),
        )
        return vod
