"""`rebuild()`: read the stream's chunks once from Kafka (a bounded `topics.reader.read` of
its offsets, never skipping a lost chunk silently), transcode them in a pool of worker
processes (each a `LadderTranscoder`), then write the VOD's playlists (and files) with the
VOD worker's code."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, Message
from confluent_kafka.admin import ConfigResource, ResourceType

from pipeline.ladder import Ladder, Rendition
from schemas.codec import Codec
from schemas.records import PartAssembler
from topics.admin import admin_client
from topics.reader import Reader, Start, read
from topics.specs import GOPS, STREAMS
from workers.rebuild.output import StoreSpec
from workers.rebuild.plan import (
    RebuildError,
    ReplayRange,
    check_retention,
    replay_range,
    resolve_rungs,
)
from workers.transcode.core import LadderTranscoder
from workers.vod.builder import VodBuilder
from workers.vod.chapters import chapters_for
from workers.vod.history import channel_info_at, read_stream_history
from workers.vod.timeline import SegmentSet, Timeline

logger = logging.getLogger(__name__)


def topic_retention_ms(bootstrap: str, topic: str) -> int | None:
    try:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        configs = admin_client(bootstrap).describe_configs([resource])[resource].result(10)
        return int(configs["retention.ms"].value)
    except (KafkaException, KeyError, ValueError):
        return None


# ---- the worker processes ----------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def _init_process(
    spec: StoreSpec,
    rungs: Sequence[tuple[int, int, int]],
    preset: str,
    source_passthrough: bool,
    part_target_ms: int,
    ts_segments: bool,
) -> None:
    store = spec.open()
    ladder = Ladder(tuple(Rendition(*r) for r in rungs))
    _STATE["codec"] = Codec()
    _STATE["transcoder"] = LadderTranscoder(
        ladder,
        store,
        preset=preset,
        source_passthrough=source_passthrough,
        part_target_90k=part_target_ms * 90,
        ts_segments=ts_segments,
    )


def _transcode(value: bytes) -> list[dict[str, Any]]:
    """One chunk through every rung (runs in a worker process)."""
    record = _STATE["codec"].expect("GopChunk", value)
    transcoder: LadderTranscoder = _STATE["transcoder"]
    return transcoder.process(record)


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
    source_passthrough: bool = True,  # as live (Settings' default): the same bytes
    part_target_ms: int = 200,  # as live: CMAF segments (cut in parts) beside MPEG-TS; 0: TS only
    ts_segments: bool = True,  # as live: MPEG-TS segments too
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
    with Reader(bootstrap, gops_topic) as reader:
        low, high = reader.watermarks(where.partition)
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
        bootstrap,
        where,
        stream_id,
        output,
        rungs,
        (preset, source_passthrough, part_target_ms, ts_segments),
        workers,
        progress,
    )
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
    bootstrap: str,
    where: ReplayRange,
    stream_id: str,
    output: StoreSpec,
    rungs: Sequence[Rendition],
    encoding: tuple[str, bool, int, bool],  # x264 preset, passthrough, part target (ms), TS
    workers: int | None,
    progress: Callable[[int, float], None] | None,
) -> SegmentSet:
    """Read the stream's chunks once and keep every worker process busy (at most two chunks
    waiting per process, so memory stays bounded). A chunk lost under the read (retention;
    `auto.offset.reset` is `error`, so nothing is skipped silently), a consumer error, or no
    chunk for 60 s is a `RebuildError`."""
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
        initargs=(output, [(r.height, r.fps, r.bitrate_bps) for r in rungs], *encoding),
    ) as pool:
        with closing(_chunks(bootstrap, where)) as chunks:
            for msg in chunks:
                if msg.key() != key:
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


def _chunks(bootstrap: str, where: ReplayRange) -> Generator[Message, None, None]:
    """Every record of the replay range, in order; what reading raises as a `RebuildError`."""
    partition = where.partition
    records = read(
        bootstrap,
        where.topic,
        partitions=[partition],
        start=Start.offset(where.first_offset),
        stop_at={partition: where.last_offset + 1},
        idle_timeout_s=60,
        config={"auto.offset.reset": "error"},  # never skip lost chunks silently
    )
    offset = where.first_offset - 1
    with closing(records):
        while True:
            try:
                msg = next(records)
            except StopIteration:
                return
            except KafkaException as exc:  # e.g. retention deleted the chunks under us
                raise RebuildError(
                    f"reading {where.topic}[{partition}] at offset {offset + 1}: {exc}"
                ) from exc
            except TimeoutError as exc:  # nothing for 60 s
                raise RebuildError(
                    f"no GOP chunk from {where.topic}[{partition}] at offset {offset + 1}: {exc}"
                ) from exc
            offset = msg.offset() or 0
            yield msg
