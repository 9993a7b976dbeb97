"""The transcode core, without Kafka: GopChunk records (whole GOPs or their parts) in, each
rung's segment written to the store and its `SegmentReady` record out.

`RungTranscoder` is one rung (what one live transcode worker does per record);
`LadderTranscoder` runs a record through every rung of a ladder (what a rebuild does)::

    transcoder = LadderTranscoder(ladder, store)
    events = transcoder.process(record)  # one SegmentReady record per rung that applies
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import MediaError
from pipeline.keys import cmaf_key, cmaf_segment_name, segment_key
from pipeline.ladder import Ladder, Rendition
from pipeline.metrics import Registry
from pipeline.store import ObjectStore
from pipeline.timebase import bitrate_bps
from schemas.records import gop_from_record
from workers.transcode.encoder import EncodedSegment, GopEncoding, GopTranscoder
from workers.transcode.parts import CmafPart

logger = logging.getLogger(__name__)

SEGMENT_CACHE_CONTROL = "public, max-age=31536000, immutable"
CMAF_TYPE = "video/iso.segment"


@dataclass
class RungTranscoder:
    """One rung: each GopChunk record → the SegmentReady record of the segment it completes
    (the segment already in the store), or None. Keeps the GOPs still arriving in parts, one
    per stream, each with the (partition, offset) of its first part. Not thread-safe."""

    rung: Rendition
    ladder: Ladder
    store: ObjectStore
    preset: str = "veryfast"
    # the tallest rungs are a live GOP's critical path: let x264 slice them over two threads
    # (zerolatency sliced threads add no delay); the smaller rungs fill the other core
    threads: int | None = None
    registry: Registry = field(default_factory=Registry)
    source_passthrough: bool = False  # a rung equal to the source carries the source's video
    # > 0: every segment is also written as CMAF, cut in parts of at most this long, and
    # each part's PartReady record goes to `on_part` once the part is durable (LL-HLS)
    part_target_90k: int = 0
    on_part: Callable[[dict[str, Any]], None] = field(default=lambda record: None)
    # every segment also as MPEG-TS (the classic playlists'); off: CMAF only (needs parts)
    ts_segments: bool = True

    def __post_init__(self) -> None:
        self._open: dict[str, _OpenGop] = {}  # GOPs arriving in parts, by stream
        self._inits: set[str] = set()  # init segments written by this transcoder
        threads = self.threads or (2 if self.rung.height >= 720 else 1)
        if not self.ts_segments and not self.part_target_90k:
            raise ValueError("a rung without MPEG-TS segments needs CMAF parts (part_target_90k)")
        self._transcoder = GopTranscoder(
            self.rung,
            preset=self.preset,
            threads=threads,
            source_passthrough=self.source_passthrough,
            ts_segments=self.ts_segments,
        )
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
            if self.part_target_90k:
                self.on_part({**_part_base(base), "end_of_stream": True})
            return {**base, **_EMPTY, "end_of_stream": True, "program_date_time_ms": 0}
        if record["part_index"] > 0 or not record["last_part"]:
            return self._part(record, base, position)
        gop = gop_from_record(record)
        started = time.perf_counter()
        try:
            encoding = self._transcoder.begin(gop, self.part_target_90k)
            encoding.feed(gop.units)
            parts = encoding.ready_parts()
            segment = encoding.finish(gop.duration_90k)
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
        if self.part_target_90k:
            whole = _OpenGop(gop.sequence, encoding, 0, 0, gop.start_pts_90k)
            whole.pdt_ms = record["ingest_time_ms"] - gop.duration_90k // 90
            whole.unstored = [*parts, *encoding.last_parts]
            self._flush_parts(base, whole, final=True)
            return self._written(base, gop.start_pts_90k, gop.duration_90k, segment, whole)
        return self._written(base, gop.start_pts_90k, gop.duration_90k, segment)

    def open_streams(self) -> list[str]:
        """The streams with a GOP still arriving in parts."""
        return list(self._open)

    def open_offsets(self, partition: int) -> list[int]:
        """Where the GOPs still arriving on `partition` began (their first parts' offsets)."""
        return [g.first_offset for g in self._open.values() if g.partition == partition]

    def drop_stale(self, max_age_s: float) -> None:
        """Forget GOPs whose first part came more than `max_age_s` ago (their ingest died)."""
        stale = time.monotonic() - max_age_s
        for stream_id in [k for k, g in self._open.items() if g.opened_at < stale]:
            logger.warning("transcode %s: stream %s GOP never completed; dropped",
                           self.rung.name, stream_id)  # fmt: skip
            del self._open[stream_id]

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget the GOPs still arriving on `partitions` (another worker's job now)."""
        for stream_id in [k for k, g in self._open.items() if g.partition in partitions]:
            del self._open[stream_id]

    def _part(
        self, record: dict[str, Any], base: dict[str, Any], position: tuple[int, int]
    ) -> dict[str, Any] | None:
        """A GOP arriving in parts: encode each part now; the segment when the last comes.
        What is encoded stays with its open GOP until it is stored — the CMAF parts cut so
        far (`unstored`) and the finished segment — so when the store fails and the worker
        retries the chunk, the same objects are written again and no chunk is fed twice."""
        stream_id, sequence, index = record["stream_id"], record["sequence"], record["part_index"]
        current = self._open.get(stream_id)
        if current is not None and (current.sequence, current.next_part) == (sequence, index + 1):
            if current.finished is not None:
                return self._store_finished(stream_id, current, base, record["duration_90k"])
            self._flush_parts(base, current, final=False)  # fed already: store what is left
            return None
        head = gop_from_record(record)
        started = time.perf_counter()
        try:
            if index == 0:
                self._open[stream_id] = _OpenGop(
                    sequence,
                    self._transcoder.begin(head, self.part_target_90k),
                    *position,
                    record["start_pts_90k"],
                    pdt_ms=record["ingest_time_ms"] - _span_90k(head.units) // 90,
                )
            current = self._open.get(stream_id)
            if current is None or (current.sequence, current.next_part) != (sequence, index):
                # its first part came before this worker's start: a predecessor finished it
                self._open.pop(stream_id, None)
                return None
            current.encoding.feed(head.units)
            current.next_part += 1
            current.seconds += time.perf_counter() - started
            current.unstored.extend(current.encoding.ready_parts())
            if record["last_part"]:
                started = time.perf_counter()
                current.finished = current.encoding.finish(record["duration_90k"])
                current.unstored.extend(current.encoding.last_parts)
        except MediaError as exc:
            self._open.pop(stream_id, None)
            self.bad.inc()
            logger.warning(
                "transcode %s: stream %s GOP %d: %s", self.rung.name, stream_id, sequence, exc
            )
            return None
        except BaseException:
            self._open.pop(stream_id, None)  # nothing half-fed is left for a retry to extend
            raise
        if current.finished is None:
            self._flush_parts(base, current, final=False)
            return None
        self.encode_seconds.observe(current.seconds + time.perf_counter() - started)
        return self._store_finished(stream_id, current, base, record["duration_90k"])

    def _store_finished(
        self, stream_id: str, current: _OpenGop, base: dict[str, Any], duration_90k: int
    ) -> dict[str, Any]:
        assert current.finished is not None
        self._flush_parts(base, current, final=True)  # again on a retry: a repeated record
        event = self._written(base, current.start_pts_90k, duration_90k, current.finished, current)
        del self._open[stream_id]  # stored: the GOP no longer holds back the commit
        return event

    def _flush_parts(self, base: dict[str, Any], gop: _OpenGop, *, final: bool) -> None:
        """Store each CMAF part not stored yet (with the GOP's last, the whole CMAF segment
        first), then hand its PartReady record to `on_part`: a part is never announced before
        it is durable, and leaves `unstored` only once announced. When the GOP ends with no
        frame left over (its last part went out when its last frame was encoded, before the
        GOP was known to end there), that part is announced again with `last`: the record
        that completes the segment."""
        cutter = gop.encoding.cutter
        if not self.part_target_90k or cutter is None or cutter.init is None:
            return
        stream_id, rendition, sequence = base["stream_id"], base["rendition"], base["sequence"]
        init_key = cmaf_key(stream_id, rendition, cutter.init.name)
        if init_key not in self._inits:
            self.store.put(
                init_key, cutter.init.data, content_type="video/mp4",
                cache_control=SEGMENT_CACHE_CONTROL,
            )  # fmt: skip
            self._inits.add(init_key)

        def record_of(part: CmafPart, key: str) -> dict[str, Any]:
            assert cutter is not None and cutter.init is not None
            return {
                **_part_base(base),
                "part": part.index,
                "key": key,
                "init_key": init_key,
                "start_pts_90k": part.start_90k,
                "duration_90k": part.duration_90k,
                "independent": part.independent,
                "program_date_time_ms": gop.pdt_ms,
                "width": cutter.size[0],
                "height": cutter.size[1],
                "fps": gop.encoding.run.fps,
                "codecs": cutter.init.codecs,
            }

        def completing(parts: list[CmafPart]) -> dict[str, Any]:
            whole = b"".join(p.data for p in parts)
            segment = cmaf_key(stream_id, rendition, cmaf_segment_name(sequence))
            self.store.put(
                segment, whole, content_type=CMAF_TYPE, cache_control=SEGMENT_CACHE_CONTROL
            )
            duration_90k = sum(p.duration_90k for p in parts)
            gop.cmaf_segment = (segment, init_key, len(whole))  # what SegmentReady names
            return {
                "last": True,
                "segment_key": segment,
                "segment_duration_90k": duration_90k,
                "bitrate_bps": bitrate_bps(len(whole), duration_90k),
            }

        def part_key(part: CmafPart) -> str:
            return cmaf_key(stream_id, rendition, cmaf_segment_name(sequence, part.index))

        if final and not gop.unstored and gop.parts:  # every part went out already
            last = gop.parts[-1]
            self.on_part(record_of(last, part_key(last)) | completing(gop.parts))
            return
        while gop.unstored:
            part = gop.unstored[0]
            key = part_key(part)
            self.store.put(
                key, part.data, content_type=CMAF_TYPE, cache_control=SEGMENT_CACHE_CONTROL
            )
            record = record_of(part, key)
            closing = final and len(gop.unstored) == 1
            if closing:
                record |= completing([*gop.parts, part])
            self.on_part(record)
            gop.parts.append(part)
            gop.unstored.pop(0)

    def _written(
        self,
        base: dict[str, Any],
        start_pts_90k: int,
        duration_90k: int,
        segment: EncodedSegment,
        gop: _OpenGop | None = None,
    ) -> dict[str, Any]:
        """Store the MPEG-TS segment under its deterministic name → its SegmentReady record,
        which also names the GOP's CMAF segment and init (`_flush_parts` stored them: the VOD
        reads those). Without MPEG-TS (`ts_segments` off) the CMAF segment is the segment."""
        stream_id, rendition, sequence = base["stream_id"], base["rendition"], base["sequence"]
        cmaf: dict[str, str] = {"cmaf_key": "", "init_key": ""}
        cmaf_size = 0
        if gop is not None and gop.cmaf_segment is not None:
            cmaf["cmaf_key"], cmaf["init_key"], cmaf_size = gop.cmaf_segment
        if self.ts_segments:
            key, size = segment_key(stream_id, rendition, sequence), len(segment.data)
            bitrate = segment.bitrate_bps
            self.store.put(
                key, segment.data, content_type="video/mp2t", cache_control=SEGMENT_CACHE_CONTROL
            )
        elif cmaf["cmaf_key"]:
            key, size = cmaf["cmaf_key"], cmaf_size
            bitrate = bitrate_bps(size, segment.duration_90k)
        else:  # not reached: a GOP that `finish()` accepted has encoded frames, cut in parts
            raise MediaError(f"GOP {sequence}: no CMAF part to make the segment of")
        self.segments.inc()
        return {
            **base,
            "key": key,
            "start_pts_90k": start_pts_90k,
            "duration_90k": segment.duration_90k,
            "size_bytes": size,
            "bitrate_bps": bitrate,
            "width": segment.width,
            "height": segment.height,
            "fps": segment.fps,
            "codecs": segment.codecs,
            "program_date_time_ms": base["ingest_time_ms"] - duration_90k // 90,
            "end_of_stream": False,
            **cmaf,
        }


class LadderTranscoder:
    """Every rung of `ladder`, one `RungTranscoder` each: a record → the SegmentReady records
    of the rungs that completed a segment with it, in the ladder's order."""

    def __init__(
        self,
        ladder: Ladder,
        store: ObjectStore,
        *,
        preset: str = "veryfast",
        registry: Registry | None = None,
        source_passthrough: bool = False,
        part_target_90k: int = 0,  # > 0: CMAF too (PartReady records are not sent anywhere)
        ts_segments: bool = True,
    ) -> None:
        registry = registry if registry is not None else Registry()
        self.rungs = [
            RungTranscoder(
                rung,
                ladder,
                store,
                preset=preset,
                registry=registry,
                source_passthrough=source_passthrough,
                part_target_90k=part_target_90k,
                ts_segments=ts_segments,
            )
            for rung in ladder.rungs
        ]

    def process(
        self, record: dict[str, Any], position: tuple[int, int] = (0, 0)
    ) -> list[dict[str, Any]]:
        events = [rung.process(record, position) for rung in self.rungs]
        return [e for e in events if e is not None]


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
    finished: EncodedSegment | None = None  # encoded, not yet stored
    pdt_ms: int = 0  # wall-clock time ingest took the GOP's first frame
    parts: list[CmafPart] = field(default_factory=list)  # CMAF parts stored and announced
    unstored: list[CmafPart] = field(default_factory=list)  # cut, not stored yet
    cmaf_segment: tuple[str, str, int] | None = None  # stored: (segment key, init key, size)


def _span_90k(units: Any) -> int:
    """How much media time a part's units span (first to last dts)."""
    times = [u.dts_90k for u in units]
    return max(times) - min(times) if times else 0


def _part_base(base: dict[str, Any]) -> dict[str, Any]:
    """A PartReady record's fields that come from the chunk, the rest at their defaults."""
    keep = ("stream_id", "channel", "rendition", "sequence", "ingest_time_ms", "renditions",
            "discontinuity")  # fmt: skip
    return {**_PART_DEFAULTS, **{k: base[k] for k in keep}}


_PART_DEFAULTS: dict[str, Any] = {
    "part": 0,
    "key": "",
    "init_key": "",
    "start_pts_90k": 0,
    "duration_90k": 0,
    "independent": False,
    "program_date_time_ms": 0,
    "last": False,
    "segment_key": "",
    "segment_duration_90k": 0,
    "bitrate_bps": 0,
    "width": 0,
    "height": 0,
    "fps": 0.0,
    "codecs": "",
    "end_of_stream": False,
}


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
    "cmaf_key": "",
    "init_key": "",
}
