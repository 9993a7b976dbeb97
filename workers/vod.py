"""The VOD worker: when a stream ends, turn its live segments into a finished VOD.

    onair.streams ──StreamEnded──▶ VodWorker ──▶ read the stream's history (onair.streams)
                                      │            and its SegmentReady events (onair.segments)
                                      ▼
                                  VodBuilder ──▶ vod/<stream_id>/master.m3u8
                                      │          vod/<stream_id>/<rendition>/index.m3u8
                                      │          vod/<stream_id>/<rendition>.mp4   (faststart)
                                      │          vod/<stream_id>/poster.jpg
                                      │          vod/<stream_id>/thumbs.jpg + thumbs.vtt
                                      │          vod/<stream_id>/chapters.vtt
                                      ▼
                                  onair.vods (compacted catalog, key stream_id) ──▶ commit

Segments are not copied: they live once under `streams/<stream_id>/<rendition>/<seq>.ts` and
the VOD playlists name them `NNNNNN.ts` (the origin maps `/vod/<sid>/<r>/<seq>.ts` there), so
nothing under `streams/` may be deleted while a VOD exists (docs/vod.md, "Retention").

Pieces, from pure to I/O:

- `Timeline`: one stream's segments, aligned across renditions (GOP N = segment N), with the
  runs between discontinuities (a reconnect, a missing GOP, a timestamp jump), media offsets
  and the wall clock → media time mapping that places chapters.
- Chapters (StreamUpdated title/category changes) as WebVTT and `EXT-X-DATERANGE`.
- Media: `splice_ts()` joins segments into one continuous MPEG-TS per run, `remux_mp4()` has
  ffmpeg copy the runs into one MP4 (`-c copy -movflags +faststart`), the poster and the
  thumbnail sprite are decoded keyframes encoded as JPEG with PyAV.
- `SegmentSpool` + `Prefetcher`: while a stream is live, its segments are copied to a local
  spool as they are announced, so the end-of-stream work reads local files instead of the
  whole stream from the store (the spool is only a cache: anything missing is fetched).
- Kafka reads (`read_stream_history()`, `collect_segments()`) and the worker loop.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av
import av.error
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame
from confluent_kafka import Consumer, Message, TopicPartition

from pipeline.errors import CodecError, MediaError, ObjectNotFound
from pipeline.health import Health
from pipeline.keys import segment_key, vod_key
from pipeline.metrics import Registry
from pipeline.playlist import (
    BandwidthMeter,
    SegmentEntry,
    Variant,
    render_master_playlist,
    render_media_playlist,
)
from pipeline.store import ObjectStore, content_type_for
from pipeline.timebase import CLOCK_90K
from schemas.codec import Codec
from topics.client import (
    OFFSET_END,
    CheckedProducer,
    consume,
    make_consumer,
    poll_checked,
    start_new_partitions_at_end,
)
from topics.ready import wait_for_topics
from topics.specs import CHANNELS, SEGMENTS, STREAMS, VODS
from topics.table import TableReader

logger = logging.getLogger(__name__)

GROUP = "onair.vod"  # the CLI passes Settings.group("vod")
VOD_CACHE_CONTROL = "public, max-age=300"  # a rebuild may rewrite a VOD's files
JUMP_TOLERANCE_90K = 9_000  # as the live window: a bigger gap between segments is a cut
THUMB_WIDTH = 160
THUMB_COLUMNS = 10
THUMB_INTERVAL_S = 10.0
POSTER_MAX_WIDTH = 1280
JPEG_MAX_SIDE = 65_000  # JPEG's limit is 65535 pixels a side
FFMPEG = "ffmpeg"
_MS_90K = CLOCK_90K // 1000


# ---- the timeline: aligned segments, runs, media time ------------------------------------


@dataclass
class SegmentSet:
    """Every SegmentReady of one stream, one per (rendition, sequence): a segment re-produced
    after a worker restart shows up twice and is kept once."""

    stream_id: str
    segments: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    ends: dict[str, int] = field(default_factory=dict)  # rendition → end marker's sequence
    announced: set[str] = field(default_factory=set)  # the records' `renditions`
    duplicates: int = 0
    foreign: bool = False  # its segments are not in our store

    def add(self, record: Mapping[str, Any]) -> None:
        rendition = record["rendition"]
        self.announced.update(record.get("renditions") or ())
        if record["end_of_stream"]:
            self.ends[rendition] = record["sequence"]
            return
        by_sequence = self.segments.setdefault(rendition, {})
        if record["sequence"] in by_sequence:
            self.duplicates += 1
            return
        by_sequence[record["sequence"]] = dict(record)

    def complete(self, expected: Iterable[str]) -> bool:
        wanted = set(expected) or self.announced
        return bool(wanted) and wanted <= self.ends.keys()


@dataclass(frozen=True)
class Timeline:
    """The segments every included rendition has, in order, and where the media breaks.

    Index i is the i-th segment of the VOD in every rendition (sequence `sequences[i]`).
    `breaks` holds the indexes that open a new run: the segment carries `discontinuity`
    (a reconnect), a sequence is missing before it (a GOP no worker could transcode), or its
    timestamps do not continue the previous segment's. Durations come from the first
    (highest) rendition; the others differ by less than a frame.
    """

    renditions: tuple[str, ...]
    sequences: tuple[int, ...]
    records: Mapping[str, Mapping[int, Mapping[str, Any]]]
    breaks: frozenset[int]
    offsets_90k: tuple[int, ...]
    total_90k: int
    dropped: int = 0  # segments left out because not every rendition had them

    @classmethod
    def build(
        cls,
        segments: SegmentSet,
        renditions: Sequence[str],
        jump_tolerance_90k: int = JUMP_TOLERANCE_90K,
    ) -> Timeline:
        present = [r for r in renditions if segments.segments.get(r)]
        if not present:
            raise MediaError(f"stream {segments.stream_id}: no segment in any rendition")
        heights = {r: next(iter(segments.segments[r].values()))["height"] for r in present}
        ordered = tuple(sorted(present, key=lambda r: (-heights[r], r)))
        common = set.intersection(*(set(segments.segments[r]) for r in ordered))
        if not common:
            raise MediaError(f"stream {segments.stream_id}: the renditions share no segment")
        sequences = tuple(sorted(common))
        dropped = sum(len(segments.segments[r]) - len(common) for r in ordered)
        reference = segments.segments[ordered[0]]
        breaks: set[int] = set()
        offsets: list[int] = []
        total = 0
        for index, sequence in enumerate(sequences):
            offsets.append(total)
            record = reference[sequence]
            total += record["duration_90k"]
            if index == 0:
                continue
            before = reference[sequences[index - 1]]
            expected_pts = before["start_pts_90k"] + before["duration_90k"]
            if (
                sequence != sequences[index - 1] + 1
                or any(segments.segments[r][sequence]["discontinuity"] for r in ordered)
                or abs(record["start_pts_90k"] - expected_pts) > jump_tolerance_90k
            ):
                breaks.add(index)
        records = {r: segments.segments[r] for r in ordered}
        return cls(ordered, sequences, records, frozenset(breaks), tuple(offsets), total, dropped)

    @property
    def total_ms(self) -> int:
        return self.total_90k // _MS_90K

    def record(self, index: int, rendition: str | None = None) -> Mapping[str, Any]:
        return self.records[rendition or self.renditions[0]][self.sequences[index]]

    def runs(self) -> list[range]:
        """Index ranges between breaks: within a run, timestamps continue."""
        starts = [0, *sorted(self.breaks), len(self.sequences)]
        return [range(a, b) for a, b in itertools.pairwise(starts) if b > a]

    def entries(self, rendition: str) -> list[SegmentEntry]:
        """The rendition's playlist entries; PROGRAM-DATE-TIME where a run starts."""
        entries = []
        for index, sequence in enumerate(self.sequences):
            record = self.records[rendition][sequence]
            opens_run = index == 0 or index in self.breaks
            entries.append(
                SegmentEntry(
                    sequence=sequence,
                    duration_90k=record["duration_90k"],
                    uri=f"{sequence:06d}.ts",
                    discontinuity=index in self.breaks,
                    program_date_time_ms=self.record(index)["program_date_time_ms"]
                    if opens_run
                    else 0,
                    size_bytes=record["size_bytes"],
                    start_pts_90k=record["start_pts_90k"],
                )
            )
        return entries

    def index_at(self, offset_90k: int) -> int:
        """The segment playing at a media offset."""
        low, high = 0, len(self.offsets_90k) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self.offsets_90k[middle] <= offset_90k:
                low = middle
            else:
                high = middle - 1
        return low

    def offset_of_wall(self, wall_ms: int) -> int:
        """Where wall-clock time `wall_ms` falls in the VOD (90 kHz), through the segments'
        program date-times; a moment between two runs (the streamer was away) maps to the
        start of the next one."""
        for index in range(len(self.sequences)):
            record = self.record(index)
            start_ms = int(record["program_date_time_ms"])
            duration_ms = int(record["duration_90k"]) // _MS_90K
            if wall_ms < start_ms:
                return self.offsets_90k[index]
            if wall_ms < start_ms + duration_ms:
                return self.offsets_90k[index] + (wall_ms - start_ms) * _MS_90K
        return self.total_90k

    def wall_at(self, offset_90k: int) -> int:
        """The playlist's date-time at a media offset: its run's PROGRAM-DATE-TIME plus the
        media time since (what a player computes)."""
        index = self.index_at(offset_90k)
        start = max(i for i in [0, *self.breaks] if i <= index)
        run_start_ms = int(self.record(start)["program_date_time_ms"])
        return run_start_ms + (offset_90k - self.offsets_90k[start]) // _MS_90K


# ---- chapters, WebVTT, EXT-X-DATERANGE ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chapter:
    start_ms: int  # media time from the start of the VOD
    title: str | None
    category: str | None

    @property
    def label(self) -> str:
        title = self.title or "Untitled"
        return f"{title} ({self.category})" if self.category else title


def chapters_for(
    timeline: Timeline,
    initial: tuple[str | None, str | None],
    updates: Iterable[Mapping[str, Any]],
    min_length_ms: int = 1000,
) -> list[Chapter]:
    """The first chapter has the channel's title and category at the start; each
    StreamUpdated that changes them opens the next one where it happened. A chapter shorter
    than `min_length_ms` is replaced by its successor. No title nor category at all → none."""
    chapters = [Chapter(0, *initial)]
    for update in sorted(updates, key=lambda u: u["updated_ms"]):
        start_ms = timeline.offset_of_wall(update["updated_ms"]) // _MS_90K
        title, category = update.get("title"), update.get("category")
        last = chapters[-1]
        if (title, category) == (last.title, last.category) or start_ms >= timeline.total_ms:
            continue
        if start_ms - last.start_ms < min_length_ms:
            chapters[-1] = Chapter(last.start_ms, title, category)
        else:
            chapters.append(Chapter(start_ms, title, category))
    if len(chapters) == 1 and chapters[0].title is None and chapters[0].category is None:
        return []
    return chapters


def vtt_time(ms: int) -> str:
    hours, rest = divmod(max(0, ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _cue_text(text: str) -> str:
    flat = " ".join(text.split())
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chapters_vtt(chapters: Sequence[Chapter], total_ms: int) -> str:
    lines = ["WEBVTT", ""]
    for index, chapter in enumerate(chapters):
        end = chapters[index + 1].start_ms if index + 1 < len(chapters) else total_ms
        lines += [
            f"chapter-{index + 1}",
            f"{vtt_time(chapter.start_ms)} --> {vtt_time(end)}",
            _cue_text(chapter.label),
            "",
        ]
    return "\n".join(lines)


def iso_ms(wall_ms: int) -> str:
    moment = datetime.fromtimestamp(wall_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _quoted(text: str) -> str:
    """An HLS quoted-string: no double quote, no line break."""
    return " ".join(text.replace('"', "'").split())


def daterange_lines(chapters: Sequence[Chapter], timeline: Timeline) -> list[str]:
    lines = []
    for index, chapter in enumerate(chapters):
        end = chapters[index + 1].start_ms if index + 1 < len(chapters) else timeline.total_ms
        attrs = [
            f'ID="chapter-{index + 1}"',
            'CLASS="com.onair.chapter"',
            f'START-DATE="{iso_ms(timeline.wall_at(chapter.start_ms * _MS_90K))}"',
            f"DURATION={(end - chapter.start_ms) / 1000:.3f}",
        ]
        if chapter.title:
            attrs.append(f'X-TITLE="{_quoted(chapter.title)}"')
        if chapter.category:
            attrs.append(f'X-CATEGORY="{_quoted(chapter.category)}"')
        lines.append("#EXT-X-DATERANGE:" + ",".join(attrs))
    return lines


def vod_media_playlist(timeline: Timeline, rendition: str, chapters: Sequence[Chapter] = ()) -> str:
    """PLAYLIST-TYPE VOD, ENDLIST, DISCONTINUITY at every break, chapters as DATERANGE."""
    entries = timeline.entries(rendition)
    text = render_media_playlist(entries, media_sequence=entries[0].sequence, vod=True)
    if not chapters:
        return text
    lines = text.splitlines()
    at = lines.index("#EXT-X-INDEPENDENT-SEGMENTS") + 1
    lines[at:at] = daterange_lines(chapters, timeline)
    return "\n".join(lines) + "\n"


def vod_master_playlist(timeline: Timeline) -> str:
    variants = []
    for rendition in timeline.renditions:
        meter = BandwidthMeter()
        for sequence in timeline.sequences:
            record = timeline.records[rendition][sequence]
            meter.add(record["size_bytes"], record["duration_90k"])
        first = timeline.records[rendition][timeline.sequences[0]]
        variants.append(
            Variant(
                uri=f"{rendition}/index.m3u8",
                bandwidth_bps=meter.peak_bps,
                average_bandwidth_bps=meter.average_bps,
                width=first["width"],
                height=first["height"],
                fps=first["fps"],
                codecs=first["codecs"],
                name=rendition,
            )
        )
    return render_master_playlist(variants)


@dataclass(frozen=True, slots=True)
class ThumbnailGrid:
    """Which moments the sprite shows and where each tile sits."""

    interval_ms: int
    count: int
    width: int
    height: int
    columns: int

    @classmethod
    def plan(
        cls, total_ms: int, source_size: tuple[int, int], interval_s: float = THUMB_INTERVAL_S
    ) -> ThumbnailGrid:
        source_width, source_height = source_size
        height = max(2, round(THUMB_WIDTH * source_height / source_width / 2) * 2)
        interval_ms = max(1, round(interval_s * 1000))
        max_tiles = (JPEG_MAX_SIDE // height) * THUMB_COLUMNS
        interval_ms = max(interval_ms, math.ceil(total_ms / max_tiles))  # a very long stream
        count = max(1, math.ceil(total_ms / interval_ms))
        return cls(interval_ms, count, THUMB_WIDTH, height, min(THUMB_COLUMNS, count))

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.columns)

    def vtt(self, total_ms: int, image: str = "thumbs.jpg") -> str:
        lines = ["WEBVTT", ""]
        for k in range(self.count):
            start = k * self.interval_ms
            end = min(total_ms, start + self.interval_ms)
            x, y = (k % self.columns) * self.width, (k // self.columns) * self.height
            lines += [
                f"{vtt_time(start)} --> {vtt_time(end)}",
                f"{image}#xywh={x},{y},{self.width},{self.height}",
                "",
            ]
        return "\n".join(lines)


# ---- media: splice, remux, JPEG --------------------------------------------------------------

TS_PACKET = 188
_NULL_PID = 0x1FFF


def _first_counters(segment: bytes, known: set[int]) -> dict[int, int]:
    """Continuity counter of each PID's first payload packet (stops once every `known` PID
    is found)."""
    found: dict[int, int] = {}
    for pos in range(0, len(segment) - TS_PACKET + 1, TS_PACKET):
        flags = segment[pos + 3]
        pid = ((segment[pos + 1] & 0x1F) << 8) | segment[pos + 2]
        if pid != _NULL_PID and flags & 0x10 and pid not in found:
            found[pid] = flags & 0x0F
            if known and known <= found.keys():
                break
    return found


def discontinuity_packet(pid: int, counter: int) -> bytes:
    """An adaptation-only packet with discontinuity_indicator set: the next packet of `pid`
    may carry any continuity counter (ISO/IEC 13818-1, 2.4.3.5)."""
    header = bytes((0x47, (pid >> 8) & 0x1F, pid & 0xFF, 0x20 | (counter & 0x0F), 183, 0x80))
    return header + b"\xff" * 182


def splice_ts(segments: Iterable[bytes], out: IO[bytes]) -> int:
    """Write segments as one MPEG-TS stream. Each segment was muxed alone, so its continuity
    counters restart at 0: before every segment but the first, one discontinuity packet per
    PID tells the demuxer so (otherwise it flags the first packet of each segment corrupt).
    Timestamps are left as they are: callers splice runs whose timestamps continue."""
    known: set[int] = set()
    written = 0
    for index, segment in enumerate(segments):
        if len(segment) % TS_PACKET or not segment or segment[0] != 0x47:
            raise MediaError(f"segment {index} of a run is not MPEG-TS")
        if index == 0:
            known = set(_first_counters(segment, set()))
        else:
            firsts = _first_counters(segment, known)
            known |= firsts.keys()
            for pid, counter in sorted(firsts.items()):
                out.write(discontinuity_packet(pid, counter - 1))
                written += TS_PACKET
        out.write(segment)
        written += len(segment)
    return written


def remux_mp4(runs: Sequence[tuple[Path, int]], output: Path) -> None:
    """MPEG-TS runs (file, duration in 90 kHz) → one MP4, streams copied, moov first.

    ffmpeg's concat demuxer places each run right after the previous one's duration, so a
    reconnect (timestamps starting over) becomes a seamless cut in the MP4's timeline."""
    listing = output.with_name(output.name + ".ffconcat")
    lines = ["ffconcat version 1.0"]
    for path, duration_90k in runs:
        lines += [f"file '{path.name}'", f"duration {duration_90k / CLOCK_90K:.6f}"]
    listing.write_text("\n".join(lines) + "\n")
    command = [
        FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-f", "concat", "-safe", "0", "-i", str(listing),
        "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy",
        "-movflags", "+faststart", "-f", "mp4", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not output.exists():
        raise MediaError(f"ffmpeg remux to {output.name} failed: {result.stderr.strip()[-500:]}")


def remux_stream(segments: Iterable[bytes], output: Path) -> None:
    """Segments whose timestamps continue (one run) → one MP4, spliced straight into
    ffmpeg's standard input."""
    command = [
        FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-f", "mpegts", "-i", "pipe:0",
        "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy",
        "-movflags", "+faststart", "-f", "mp4", str(output),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=errors)
        assert process.stdin is not None
        try:
            splice_ts(segments, process.stdin)
            process.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its status and message say why
        except BaseException:
            process.kill()
            process.wait()
            raise
        code = process.wait()
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()
    if code != 0 or not output.exists():
        raise MediaError(f"ffmpeg remux to {output.name} failed: {message[-500:]}")


def first_frame(segment: bytes) -> VideoFrame:
    """The segment's first video frame (segments open on an IDR frame)."""
    try:
        with av.open(io.BytesIO(segment), mode="r", format="mpegts") as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            for frame in container.decode(stream):
                return frame
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError(f"no frame decoded from a segment: {exc}") from exc
    raise MediaError("no frame decoded from a segment")


def encode_jpeg(frame: VideoFrame, width: int, height: int, qscale: int = 3) -> bytes:
    image = frame.reformat(width, height, "yuvj420p")
    encoder = CodecContext.create("mjpeg", "w")
    assert isinstance(encoder, VideoCodecContext)
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    # fixed quality, as `ffmpeg -q:v N`: global_quality = N * FF_QP2LAMBDA
    encoder.options = {"flags": "+qscale", "global_quality": str(qscale * 118)}
    try:
        packets = encoder.encode(image) + encoder.encode(None)
    except av.error.FFmpegError as exc:
        raise MediaError(f"JPEG encoding failed: {exc}") from exc
    return b"".join(bytes(p) for p in packets)


def compose_sprite(tiles: Sequence[VideoFrame], grid: ThumbnailGrid) -> VideoFrame:
    """Tiles (already `grid.width` x `grid.height`, yuv420p) in a grid, row by row; empty
    cells black."""
    width, height = grid.columns * grid.width, grid.rows * grid.height
    sprite = VideoFrame(width, height, "yuv420p")
    for plane_index, plane in enumerate(sprite.planes):
        shift = 0 if plane_index == 0 else 1
        tile_w, tile_h = grid.width >> shift, grid.height >> shift
        buffer = bytearray((16 if plane_index == 0 else 128,)) * plane.buffer_size
        stride = plane.line_size
        for k, tile in enumerate(tiles):
            source = tile.planes[plane_index]
            data, source_stride = bytes(source), source.line_size
            x0, y0 = (k % grid.columns) * tile_w, (k // grid.columns) * tile_h
            for row in range(tile_h):
                at = (y0 + row) * stride + x0
                buffer[at : at + tile_w] = data[row * source_stride : row * source_stride + tile_w]
        plane.update(bytes(buffer))
    return sprite


def even_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    if width <= max_width:
        return width - width % 2, height - height % 2
    scaled = round(height * max_width / width)
    return max_width - max_width % 2, max(2, scaled - scaled % 2)


# ---- the local spool and the live prefetcher --------------------------------------------------


class SegmentSpool:
    """Local copies of live segments, `<root>/<stream_id>/<rendition>/<seq>.ts`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, stream_id: str, rendition: str, sequence: int) -> Path:
        return self.root / stream_id / rendition / f"{sequence:06d}.ts"

    def put(self, stream_id: str, rendition: str, sequence: int, body: bytes) -> None:
        path = self.path(stream_id, rendition, sequence)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(tmp, path)

    def get(self, stream_id: str, rendition: str, sequence: int) -> bytes | None:
        try:
            return self.path(stream_id, rendition, sequence).read_bytes()
        except FileNotFoundError:
            return None

    def drop(self, stream_id: str) -> None:
        shutil.rmtree(self.root / stream_id, ignore_errors=True)

    def sweep(self, max_age_s: float) -> None:
        """Forget streams whose spool has not changed for `max_age_s` (never ended here)."""
        cutoff = time.time() - max_age_s
        for child in self.root.iterdir():
            with contextlib.suppress(OSError):
                if child.is_dir() and child.stat().st_mtime < cutoff:
                    shutil.rmtree(child, ignore_errors=True)


class Prefetcher:
    """Follows onair.segments from its end and copies the segments of the streams it is told
    about (`want`) into the spool, a few at a time in threads."""

    def __init__(
        self,
        bootstrap: str,
        store: ObjectStore,
        spool: SegmentSpool,
        *,
        topic: str = SEGMENTS,
        workers: int = 4,
        registry: Registry | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.store = store
        self.spool = spool
        self.topic = topic
        self._wanted: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vod-prefetch")
        self._slots = threading.BoundedSemaphore(workers * 4)
        self._thread: threading.Thread | None = None
        self._codec = Codec()
        self.fetched = (registry or Registry()).counter(
            "onair_vod_prefetched_segments_total", "Live segments copied to the VOD spool."
        )

    def want(self, stream_id: str) -> None:
        with self._lock:
            self._wanted.add(stream_id)

    def forget(self, stream_id: str) -> None:
        with self._lock:
            self._wanted.discard(stream_id)

    def start(self) -> None:
        consumer = make_consumer(self.bootstrap, None)
        metadata = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
        consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in metadata.partitions])
        self._thread = threading.Thread(
            target=self._follow, args=(consumer,), name="vod-prefetch", daemon=True
        )
        self._thread.start()

    def _follow(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                msg = poll_checked(consumer, 0.2)
                if msg is not None:
                    self._take(msg)
        except Exception:  # the spool is an optimisation: the worker goes on without it
            logger.exception("vod prefetch stopped")
        finally:
            consumer.close()

    def _take(self, msg: Message) -> None:
        key = (msg.key() or b"").decode("utf-8", "replace")
        with self._lock:
            if key not in self._wanted:
                return
        try:
            record = self._codec.expect("SegmentReady", msg.value())
        except CodecError:
            return
        if record["end_of_stream"] or not record["key"]:
            return
        self._slots.acquire()
        self._pool.submit(self._fetch, record).add_done_callback(lambda _: self._slots.release())

    def _fetch(self, record: dict[str, Any]) -> None:
        try:
            body = self.store.get(record["key"]).body
            self.spool.put(record["stream_id"], record["rendition"], record["sequence"], body)
            self.fetched.inc()
        except ObjectNotFound:  # not in this store: another platform's stream
            logger.debug("vod prefetch: %s not found", record["key"])
        except Exception as exc:
            logger.warning("vod prefetch of %s failed: %s", record["key"], exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)


# ---- reading the stream's story from Kafka ---------------------------------------------------

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


# ---- building a VOD -------------------------------------------------------------------------


def put_file(
    store: ObjectStore, key: str, path: Path, *, content_type: str, cache_control: str
) -> None:
    """Write a large local file (an MP4 of hours of video) to the store: through the store's
    own `put_file()` (S3: a multipart upload with parts in parallel), else as bytes."""
    upload = getattr(store, "put_file", None)
    if upload is not None:
        upload(key, path, content_type=content_type, cache_control=cache_control)
        return
    store.put(key, path.read_bytes(), content_type=content_type, cache_control=cache_control)


def _ordered(
    items: Sequence[int], fetch: Callable[[int], bytes], pool: ThreadPoolExecutor, window: int = 8
) -> Iterator[bytes]:
    """`fetch(item)` for every item, in order, at most `window` ahead."""
    pending: list[Future[bytes]] = []
    upcoming = iter(items)
    for item in upcoming:
        pending.append(pool.submit(fetch, item))
        if len(pending) >= window:
            break
    while pending:
        result = pending.pop(0).result()
        nxt = next(upcoming, None)
        if nxt is not None:
            pending.append(pool.submit(fetch, nxt))
        yield result


@dataclass
class VodBuilder:
    """Writes one stream's VOD files into `store`. Segments are read from `spool` when it has
    them, from `source` (the store holding `streams/...`, by default `store`) otherwise."""

    store: ObjectStore
    spool: SegmentSpool | None = None
    source: ObjectStore | None = None
    thumbnail_interval_s: float = THUMB_INTERVAL_S
    fetch_workers: int = 4
    mp4: bool = True

    def segment(self, stream_id: str, rendition: str, sequence: int) -> bytes:
        if self.spool is not None:
            local = self.spool.get(stream_id, rendition, sequence)
            if local is not None:
                return local
        return (self.source or self.store).get(segment_key(stream_id, rendition, sequence)).body

    def _put(self, key: str, body: bytes) -> None:
        self.store.put(
            key, body, content_type=content_type_for(key), cache_control=VOD_CACHE_CONTROL
        )

    def write_playlists(
        self, stream_id: str, timeline: Timeline, chapters: Sequence[Chapter]
    ) -> str:
        for rendition in timeline.renditions:
            text = vod_media_playlist(timeline, rendition, chapters)
            self._put(vod_key(stream_id, f"{rendition}/index.m3u8"), text.encode())
        master = vod_key(stream_id, "master.m3u8")
        self._put(master, vod_master_playlist(timeline).encode())
        if chapters:
            self._put(
                vod_key(stream_id, "chapters.vtt"),
                chapters_vtt(chapters, timeline.total_ms).encode(),
            )
        return master

    def write_mp4(self, stream_id: str, timeline: Timeline, rendition: str, workdir: Path) -> str:
        directory = workdir / rendition
        directory.mkdir(parents=True, exist_ok=True)
        output = directory / f"{rendition}.mp4"
        runs = timeline.runs()
        started = time.perf_counter()
        with ThreadPoolExecutor(self.fetch_workers) as pool:

            def segments(run: range) -> Iterator[bytes]:
                sequences = [timeline.sequences[i] for i in run]
                return _ordered(sequences, lambda s: self.segment(stream_id, rendition, s), pool)

            if len(runs) == 1:  # the usual case: straight into ffmpeg, no temporary copy
                remux_stream(segments(runs[0]), output)
            else:
                files: list[tuple[Path, int]] = []
                for number, run in enumerate(runs):
                    path = directory / f"run-{number:04d}.ts"
                    with path.open("wb") as out:
                        splice_ts(segments(run), out)
                    end = timeline.offsets_90k[run[-1]] + timeline.record(run[-1])["duration_90k"]
                    files.append((path, end - timeline.offsets_90k[run[0]]))
                remux_mp4(files, output)
                for path, _ in files:
                    path.unlink()
        remuxed = time.perf_counter()
        key = vod_key(stream_id, f"{rendition}.mp4")
        size = output.stat().st_size
        put_file(
            self.store,
            key,
            output,
            content_type=content_type_for(key),
            cache_control=VOD_CACHE_CONTROL,
        )
        output.unlink()
        logger.info(
            "vod: stream %s: %s.mp4, %.0f MB: remux %.1fs, upload %.1fs",
            stream_id,
            rendition,
            size / 1e6,
            remuxed - started,
            time.perf_counter() - remuxed,
        )
        return key

    def write_images(self, stream_id: str, timeline: Timeline) -> tuple[str, str]:
        """poster.jpg (a third in, highest rendition), thumbs.jpg + thumbs.vtt (lowest)."""
        top = timeline.renditions[0]
        poster_index = timeline.index_at(timeline.total_90k // 3)
        frame = first_frame(self.segment(stream_id, top, timeline.sequences[poster_index]))
        poster = vod_key(stream_id, "poster.jpg")
        self._put(
            poster, encode_jpeg(frame, *even_size(frame.width, frame.height, POSTER_MAX_WIDTH))
        )

        low = timeline.renditions[-1]
        first = timeline.record(0, low)
        grid = ThumbnailGrid.plan(
            timeline.total_ms, (first["width"], first["height"]), self.thumbnail_interval_s
        )
        decoded: dict[int, VideoFrame] = {}
        tiles = []
        for k in range(grid.count):
            index = timeline.index_at(k * grid.interval_ms * _MS_90K)
            if index not in decoded:
                segment = self.segment(stream_id, low, timeline.sequences[index])
                decoded[index] = first_frame(segment).reformat(grid.width, grid.height, "yuv420p")
            tiles.append(decoded[index])
        sprite = compose_sprite(tiles, grid)
        self._put(
            vod_key(stream_id, "thumbs.jpg"), encode_jpeg(sprite, sprite.width, sprite.height, 4)
        )
        vtt = vod_key(stream_id, "thumbs.vtt")
        self._put(vtt, grid.vtt(timeline.total_ms).encode())
        return poster, vtt

    def build(
        self,
        history: StreamHistory,
        segments: SegmentSet,
        *,
        expected: Sequence[str] = (),
        initial: tuple[str | None, str | None] = (None, None),
    ) -> dict[str, Any]:
        """Every VOD file, then the catalog record (not yet produced)."""
        stream_id = history.stream_id
        wanted = list(expected) or sorted(segments.announced) or sorted(segments.segments)
        complete = [r for r in wanted if r in segments.ends and segments.segments.get(r)]
        included = complete or [r for r in wanted if segments.segments.get(r)]
        timeline = Timeline.build(segments, included)
        if timeline.dropped:
            logger.warning(
                "stream %s: %d segments not in every rendition left out",
                stream_id,
                timeline.dropped,
            )
        chapters = chapters_for(timeline, initial, history.updates)
        master = self.write_playlists(stream_id, timeline, chapters)
        failures: list[str] = []
        mp4: dict[str, str] = {}
        images: tuple[str | None, str | None] = (None, None)
        with (
            tempfile.TemporaryDirectory(prefix=f"vod-{stream_id}-") as tmp,
            ThreadPoolExecutor(
                len(timeline.renditions) + 1, thread_name_prefix="vod-build"
            ) as pool,
        ):
            jobs: dict[str, Future[Any]] = {
                "images": pool.submit(self.write_images, stream_id, timeline)
            }
            if self.mp4:
                for rendition in timeline.renditions:
                    jobs[rendition] = pool.submit(
                        self.write_mp4, stream_id, timeline, rendition, Path(tmp)
                    )
            for name, job in jobs.items():
                try:
                    result = job.result()
                except (MediaError, ObjectNotFound) as exc:  # a store outage still raises
                    logger.error("stream %s: %s failed: %s", stream_id, name, exc)
                    failures.append(name)
                    continue
                if name == "images":
                    images = result
                else:
                    mp4[name] = result
        started = history.started or {}
        ended = history.ended or {}
        missing = sorted(set(wanted) - set(timeline.renditions))
        return {
            "stream_id": stream_id,
            "channel": history.channel,
            "started_ms": started.get("started_ms", 0),
            "ended_ms": ended.get("ended_ms", 0),
            "duration_ms": timeline.total_ms,
            "renditions": list(timeline.renditions),
            "segment_count": len(timeline.sequences),
            "master": master,
            "mp4": mp4,
            "poster": images[0],
            "thumbnails": images[1],
            "chapters": [
                {"start_ms": c.start_ms, "title": c.title, "category": c.category} for c in chapters
            ],
            "status": "partial"
            if failures or missing or len(complete) < len(included)
            else "complete",
            "title": next((c.title for c in chapters if c.title), None),
            "category": next((c.category for c in chapters if c.category), None),
            "chapters_vtt": vod_key(stream_id, "chapters.vtt") if chapters else None,
            "thumbnail_interval_s": self.thumbnail_interval_s,
            "discontinuities": len(timeline.breaks),
            "missing_renditions": missing,
            "completed_ms": int(time.time() * 1000),
        }


# ---- the worker ----------------------------------------------------------------------------


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
        catalog = TableReader(self.bootstrap, VODS, "Vod", self._codec)
        catalog.start()
        self.health.starting(f"joining group {self.group}")
        consumer = make_consumer(
            self.bootstrap, self.group, topics=[STREAMS], on_assign=self._assigned, **extra
        )
        producer = CheckedProducer(self.bootstrap)
        self.spool.sweep(max_age_s=48 * 3600)
        if self.prefetch:
            self.prefetcher = Prefetcher(
                self.bootstrap, self.store, self.spool, registry=self.registry
            )
            self.prefetcher.start()
        logger.info("vod: consuming %s", STREAMS)
        try:
            consume(
                consumer,
                self.stop_event,
                lambda msg: self.handle(msg, consumer, producer, catalog),
            )
        finally:
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
        try:
            name, record = self._codec.decode(msg.value())
        except CodecError as exc:
            self.bad.inc()
            logger.warning("vod: skipped event at offset %s: %s", msg.offset(), exc)
            consumer.commit(message=msg, asynchronous=False)
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
                try:
                    vod = self.make_vod(record, msg.partition() or 0, msg.offset() or 0)
                except MediaError as exc:  # e.g. no rendition has any segment: nothing to show
                    logger.error("vod: stream %s has no VOD: %s", stream_id, exc)
                    self.built.labels("failed").inc()
                    vod = None
                if vod is not None:
                    producer.send(VODS, stream_id, self._codec.encode("Vod", vod))
            if self.prefetcher is not None:
                self.prefetcher.forget(stream_id)
            self.spool.drop(stream_id)
        consumer.commit(message=msg, asynchronous=False)

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
