"""Replay: rebuild a stream's output from the GOP chunks Kafka still holds.

    onair.streams ──StreamStarted (gops_partition, gops_first_offset)──┐
                  ──StreamEnded   (gops_last_offset)───────────────────┤
                                                                       ▼
    onair.ingest.gops[partition][first..last] ──▶ process pool ──▶ streams/<sid>/<r>/<seq>.ts
       (the stream's chunks, read once)           one LadderTranscoder     + SegmentReady-like
                                                  per process              results
                                                                       ▼
                                          VodBuilder ──▶ vod/<sid>/master.m3u8, <r>/index.m3u8
                                                         (+ MP4s, poster, thumbnails: --vod-files)

Each chunk goes through `LadderTranscoder.process()` (workers/transcode/core.py): per rung,
`RungTranscoder.process()`, the live transcode path itself, so GOP N becomes segment N with
the GOP's duration: the same boundaries and durations as live. The ladder is whatever the
caller asks for (a rung that was not live is fine, upscaling is not).
Chunks are spread over worker processes, which is what makes a rebuild faster than real time.

The output is a store in the platform's layout (`streams/...` + `vod/...`), so an onair
origin pointed at it serves the rebuilt VOD at the usual URLs, and a rebuild into the
platform's own store restores lost objects. If the stream's chunks have left the topic
(retention), the rebuild stops before doing anything and says so (`ReplayExpired`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource, ResourceType

from objectstore import open_store
from pipeline.errors import NotFound, OnairError
from pipeline.ladder import Ladder, Rendition
from pipeline.store import ObjectStore, StoredObject
from schemas.codec import Codec
from schemas.records import PartAssembler
from topics.admin import admin_client
from topics.client import make_consumer, poll_checked
from topics.specs import GOPS, STREAMS
from workers.transcode.core import LadderTranscoder
from workers.vod.builder import VodBuilder, put_file
from workers.vod.chapters import chapters_for
from workers.vod.history import StreamHistory, channel_info_at, read_stream_history
from workers.vod.timeline import SegmentSet, Timeline

logger = logging.getLogger(__name__)

_RUNG = re.compile(r"^(?P<height>\d{2,4})p(?P<fps>\d{2,3})(?::(?P<kbps>\d+))?$")


class RebuildError(OnairError):
    """The stream cannot be rebuilt as asked."""


class ReplayExpired(RebuildError):
    """The stream's GOP chunks are no longer in the topic."""


# ---- the output store ------------------------------------------------------------------------


class PrefixedStore:
    """Another store seen through a key prefix (`rebuilds/<sid>-<time>/`)."""

    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def put(self, key: str, body: bytes, *, content_type: str, cache_control: str) -> None:
        self.inner.put(
            self.prefix + key, body, content_type=content_type, cache_control=cache_control
        )

    def put_file(self, key: str, path: Path, *, content_type: str, cache_control: str) -> None:
        put_file(
            self.inner,
            self.prefix + key,
            path,
            content_type=content_type,
            cache_control=cache_control,
        )

    def get(self, key: str) -> StoredObject:
        found = self.inner.get(self.prefix + key)
        return StoredObject(key, found.body, found.content_type, found.cache_control, found.etag)

    def exists(self, key: str) -> bool:
        return self.inner.exists(self.prefix + key)

    def list(self, prefix: str) -> list[str]:
        return [k[len(self.prefix) :] for k in self.inner.list(self.prefix + prefix)]

    def delete(self, key: str) -> None:
        self.inner.delete(self.prefix + key)


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """How a worker process opens the output store (store objects do not cross processes)."""

    url: str
    options: tuple[tuple[str, str], ...] = ()
    prefix: str = ""

    def open(self) -> ObjectStore:
        options = dict(self.options) if self.url.startswith("s3://") else {}
        store = open_store(self.url, **options)
        return PrefixedStore(store, self.prefix) if self.prefix else store

    def describe(self) -> str:
        return self.url.rstrip("/") + ("/" + self.prefix.strip("/") if self.prefix else "")


# ---- what to rebuild ---------------------------------------------------------------------------


def resolve_rungs(
    requested: Sequence[str] | None, ladder: Ladder, width: int, height: int, fps: float
) -> list[Rendition]:
    """The rungs to produce for a `width`x`height`@`fps` source. None → the live ladder's rule.
    Otherwise each entry is a rung of the ladder by name or by label (`720p60` or the
    `720p30` it gives a 30 fps source), or a new one with its bitrate (`540p30:2000`)."""
    if not requested:
        return ladder.for_source(width, height, fps)
    rungs: list[Rendition] = []
    for spec in requested:
        match = _RUNG.match(spec.strip())
        if match is None:
            raise RebuildError(f"rendition {spec!r} is not HEIGHTpFPS or HEIGHTpFPS:KBPS")
        known = next((r for r in ladder.rungs if spec.strip() in (r.name, r.label(fps))), None)
        if match["kbps"]:
            rung = Rendition(int(match["height"]), int(match["fps"]), int(match["kbps"]) * 1000)
        elif known is not None:
            rung = known
        else:
            names = ", ".join(r.name for r in ladder.rungs)
            raise RebuildError(
                f"rendition {spec!r} is not in the ladder ({names}): give its bitrate, "
                f"e.g. {spec.strip()}:1200"
            )
        if rung.height > height:
            raise RebuildError(
                f"rendition {spec!r} is above the source ({width}x{height}): no upscaling"
            )
        if rung.label(fps) in {r.label(fps) for r in rungs}:
            raise RebuildError(f"rendition {spec!r} asked twice")
        rungs.append(rung)
    return sorted(rungs, key=lambda r: (r.height, r.fps), reverse=True)


@dataclass(frozen=True, slots=True)
class ReplayRange:
    """Where a stream's chunks are: one partition, first..last offset (the end marker)."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    gops: int  # last_sequence + 1


def replay_range(history: StreamHistory, topic: str = GOPS) -> ReplayRange:
    started, ended = history.started, history.ended
    if started is None:
        raise NotFound(f"stream {history.stream_id}: no StreamStarted in {STREAMS}")
    if ended is None:
        raise RebuildError(f"stream {history.stream_id} has not ended yet")
    if started["gops_partition"] < 0 or started["gops_first_offset"] < 0:
        raise RebuildError(f"stream {history.stream_id}: its start recorded no GOP offsets")
    if ended["gops_partition"] not in (-1, started["gops_partition"]):
        raise RebuildError(f"stream {history.stream_id}: GOPs in two partitions")
    last = ended["gops_last_offset"]
    if last < started["gops_first_offset"] or ended["last_sequence"] < 0:
        raise RebuildError(f"stream {history.stream_id}: its end recorded no GOP offsets")
    return ReplayRange(
        topic,
        started["gops_partition"],
        started["gops_first_offset"],
        last,
        ended["last_sequence"] + 1,
    )


def check_retention(
    stream_id: str, where: ReplayRange, low: int, high: int, retention_ms: int | None
) -> None:
    """Refuse when any of the stream's chunks is below the partition's low watermark."""
    if where.first_offset >= low and where.last_offset < high:
        return
    kept = f"{retention_ms / 3_600_000:g} hours" if retention_ms else "its retention"
    if where.last_offset >= high:
        raise ReplayExpired(
            f"stream {stream_id}: its GOPs (offsets {where.first_offset}..{where.last_offset} "
            f"of {where.topic} partition {where.partition}) are past the partition's end "
            f"({high}); was the topic recreated?"
        )
    raise ReplayExpired(
        f"stream {stream_id} can no longer be rebuilt: its GOPs (offsets "
        f"{where.first_offset}..{where.last_offset} of {where.topic} partition "
        f"{where.partition}) fell out of retention; the partition now starts at offset {low} "
        f"({where.topic} keeps {kept})"
    )


def topic_retention_ms(bootstrap: str, topic: str) -> int | None:
    try:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        configs = admin_client(bootstrap).describe_configs([resource])[resource].result(10)
        return int(configs["retention.ms"].value)
    except (KafkaException, KeyError, ValueError):
        return None


# ---- the worker processes ----------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def _init_process(spec: StoreSpec, rungs: Sequence[tuple[int, int, int]], preset: str) -> None:
    store = spec.open()
    ladder = Ladder(tuple(Rendition(*r) for r in rungs))
    _STATE["codec"] = Codec()
    _STATE["transcoder"] = LadderTranscoder(ladder, store, preset=preset)


def _transcode(value: bytes) -> list[dict[str, Any]]:
    """One chunk through every rung (runs in a worker process)."""
    record = _STATE["codec"].expect("GopChunk", value)
    transcoder: LadderTranscoder = _STATE["transcoder"]
    return transcoder.process(record)


# ---- progress ----------------------------------------------------------------------------------


class ProgressBar:
    """`[#####-----] 120/300 GOPs, 240 s of media, 9.8x real time, ETA 18 s` on one line of a
    terminal, or a line every tenth elsewhere (logs, CI)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 30):
        self.label = label
        self.total = max(1, total)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.started = time.monotonic()
        self._tenth = -1
        self._tty = self.stream.isatty()

    def text(self, done: int, media_s: float, elapsed_s: float) -> str:
        filled = self.width * done // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        speed = media_s / elapsed_s if elapsed_s > 0 else 0.0
        eta = elapsed_s * (self.total - done) / done if done else 0.0
        return (
            f"{self.label} [{bar}] {done}/{self.total} GOPs, {media_s:.0f} s of media, "
            f"{speed:.1f}x real time, ETA {eta:.0f} s"
        )

    def update(self, done: int, media_s: float) -> None:
        line = self.text(done, media_s, time.monotonic() - self.started)
        if self._tty:
            self.stream.write("\r" + line)
        elif done * 10 // self.total > self._tenth:
            self._tenth = done * 10 // self.total
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()


# ---- the rebuild -------------------------------------------------------------------------------


@dataclass
class RebuildResult:
    stream_id: str
    output: str
    renditions: list[str]
    segments: int
    media_s: float
    wall_s: float
    master: str
    vod: dict[str, Any] = field(default_factory=dict)

    @property
    def speed(self) -> float:
        return self.media_s / self.wall_s if self.wall_s else 0.0


def rebuild(
    bootstrap: str,
    stream_id: str,
    output: StoreSpec,
    *,
    ladder: Ladder,
    renditions: Sequence[str] | None = None,
    workers: int | None = None,
    preset: str = "veryfast",
    vod_files: bool = False,
    progress: Callable[[int, float], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    streams_topic: str = STREAMS,
    gops_topic: str = GOPS,
) -> RebuildResult:
    started_at = time.monotonic()
    history = read_stream_history(bootstrap, stream_id, topic=streams_topic)
    where = replay_range(history, gops_topic)
    assert history.started is not None
    source = history.started
    strict: dict[str, Any] = {"auto.offset.reset": "error"}  # never skip lost chunks silently
    consumer = make_consumer(bootstrap, None, **strict)
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(gops_topic, where.partition), timeout=10
        )
        check_retention(stream_id, where, low, high, topic_retention_ms(bootstrap, gops_topic))
        rungs = resolve_rungs(renditions, ladder, source["width"], source["height"], source["fps"])
        labels = [r.label(source["fps"]) for r in rungs]
        if on_start is not None:
            on_start(where.gops)
        logger.info(
            "rebuild %s: %d GOPs from %s[%d] offsets %d..%d → %s into %s",
            stream_id, where.gops, gops_topic, where.partition, where.first_offset,
            where.last_offset, ", ".join(labels), output.describe(),
        )  # fmt: skip
        segments = _transcode_all(
            consumer, where, stream_id, output, rungs, preset, workers, progress
        )
    finally:
        consumer.close()
    missing = sorted(set(range(where.gops)) - set(segments.segments.get(labels[0], {})))
    if len(missing) == where.gops:
        raise RebuildError(f"stream {stream_id}: no GOP could be transcoded; see the log")
    if missing:  # as live: a GOP the decoder refuses is a cut in the VOD, not a failure
        logger.warning("rebuild %s: GOPs %s could not be transcoded", stream_id, missing[:20])
    store = output.open()
    builder = VodBuilder(store, mp4=vod_files)
    initial = channel_info_at(bootstrap, history.channel, source["started_ms"])
    vod: dict[str, Any] = {}
    if vod_files:
        vod = builder.build(history, segments, expected=labels, initial=initial)
        master, total_ms = vod["master"], vod["duration_ms"]
    else:
        timeline = Timeline.build(segments, labels)
        chapters = chapters_for(timeline, initial, history.updates)
        master, total_ms = builder.write_playlists(stream_id, timeline, chapters), timeline.total_ms
    return RebuildResult(
        stream_id,
        output.describe(),
        labels,
        where.gops,
        total_ms / 1000,
        time.monotonic() - started_at,
        master,
        vod,
    )


def _transcode_all(
    consumer: Any,
    where: ReplayRange,
    stream_id: str,
    output: StoreSpec,
    rungs: Sequence[Rendition],
    preset: str,
    workers: int | None,
    progress: Callable[[int, float], None] | None,
) -> SegmentSet:
    """Read the stream's chunks once and keep every worker process busy (at most two chunks
    waiting per process, so memory stays bounded)."""
    processes = max(1, workers or os.cpu_count() or 1)
    segments = SegmentSet(stream_id)
    key = stream_id.encode()
    done, media_90k = 0, 0
    pending: set[Future[list[dict[str, Any]]]] = set()
    codec = Codec()
    assembler = PartAssembler()  # GOPs ingest sent in parts are transcoded whole

    def settle(block: bool) -> None:
        nonlocal done, media_90k, pending
        if not pending:
            return
        finished, pending = wait(pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for future in finished:
            events = future.result()
            for event in events:
                segments.add(event)
            if events and not events[0]["end_of_stream"]:
                done += 1
                media_90k += events[0]["duration_90k"]
            if progress is not None:
                progress(done, media_90k / 90_000)

    context = multiprocessing.get_context("spawn")  # no fork after librdkafka started threads
    with ProcessPoolExecutor(
        processes,
        mp_context=context,
        initializer=_init_process,
        initargs=(output, [(r.height, r.fps, r.bitrate_bps) for r in rungs], preset),
    ) as pool:
        consumer.assign([TopicPartition(where.topic, where.partition, where.first_offset)])
        offset = where.first_offset - 1
        idle_deadline = time.monotonic() + 60
        while offset < where.last_offset:
            try:
                msg = poll_checked(consumer, 0.5)
            except KafkaException as exc:  # e.g. retention deleted the chunks under us
                raise RebuildError(
                    f"reading {where.topic}[{where.partition}] at offset {offset + 1}: {exc}"
                ) from exc
            if msg is None:
                if time.monotonic() > idle_deadline:
                    raise RebuildError(
                        f"no GOP chunk from {where.topic}[{where.partition}] for 60 s "
                        f"at offset {offset + 1}"
                    )
                continue
            idle_deadline = time.monotonic() + 60
            offset = msg.offset() or 0
            if msg.key() != key or offset > where.last_offset:
                continue
            whole = assembler.add(codec.expect("GopChunk", msg.value()))
            if whole is None:  # a part of a GOP still arriving
                continue
            while len(pending) >= 2 * processes:
                settle(block=True)
            pending.add(pool.submit(_transcode, codec.encode("GopChunk", whole)))
            settle(block=False)
        while pending:
            settle(block=True)
    return segments
