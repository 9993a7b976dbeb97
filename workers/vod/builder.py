"""`VodBuilder`: writes one stream's VOD files into the store (playlists, chapters, MP4s,
poster, thumbnails) and returns its catalog record."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from av.video.frame import VideoFrame

from pipeline.errors import MediaError, ObjectNotFound
from pipeline.keys import vod_key
from pipeline.store import ObjectStore, content_type_for
from workers.vod.chapters import Chapter, chapters_for, chapters_vtt
from workers.vod.history import StreamHistory
from workers.vod.media import join_cmaf, remux_mp4, remux_stream, splice_ts
from workers.vod.playlists import vod_master_playlist, vod_media_playlist
from workers.vod.spool import SegmentSpool
from workers.vod.thumbnails import (
    POSTER_MAX_WIDTH,
    THUMB_INTERVAL_S,
    ThumbnailGrid,
    compose_sprite,
    encode_jpeg,
    even_size,
    first_frame,
)
from workers.vod.timeline import MS_90K, SegmentSet, Timeline

logger = logging.getLogger(__name__)

VOD_CACHE_CONTROL = "public, max-age=300"  # a rebuild may rewrite a VOD's files
MAX_INITS = 64  # init segments a builder keeps read (a stream has one or a few per rendition)


def _ordered(
    items: Sequence[str], fetch: Callable[[str], bytes], pool: ThreadPoolExecutor, window: int = 8
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
    them, from `source` (the store holding `streams/...`, by default `store`) otherwise: the
    CMAF segments when every segment has one (`Timeline.cmaf`), the MPEG-TS ones if not."""

    store: ObjectStore
    spool: SegmentSpool | None = None
    source: ObjectStore | None = None
    thumbnail_interval_s: float = THUMB_INTERVAL_S
    fetch_workers: int = 4
    mp4: bool = True
    _inits: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _inits_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def read(self, key: str) -> bytes:
        """An object of `streams/...`: the spool's copy, else the source store's."""
        if self.spool is not None:
            local = self.spool.get(key)
            if local is not None:
                return local
        return (self.source or self.store).get(key).body

    def read_init(self, key: str) -> bytes:
        """An init segment, read once: every thumbnail tile and every run of a rendition
        starts with one of a handful of them (the images and the MP4s are made in parallel:
        one read at a time, they are small)."""
        with self._inits_lock:
            found = self._inits.get(key)
            if found is None:
                if len(self._inits) >= MAX_INITS:
                    self._inits.clear()
                found = self._inits[key] = self.read(key)
            return found

    def playable(self, timeline: Timeline, rendition: str, index: int) -> tuple[bytes, str]:
        """Segment `index` as a demuxer opens it alone, and the container's name: MPEG-TS,
        or a CMAF segment after its init segment (fragmented MP4)."""
        data = self.read(timeline.segment_key(index, rendition))
        if not timeline.cmaf:
            return data, "mpegts"
        return self.read_init(timeline.record(index, rendition)["init_key"]) + data, "mp4"

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
        runs = timeline.runs(rendition)
        cmaf = timeline.cmaf
        started = time.perf_counter()
        with ThreadPoolExecutor(self.fetch_workers) as pool:

            def segments(run: range) -> Iterator[bytes]:
                keys = [timeline.segment_key(i, rendition) for i in run]
                return _ordered(keys, self.read, pool)

            def init(run: range) -> bytes:  # a run has one init segment (Timeline.runs)
                return self.read_init(timeline.record(run[0], rendition)["init_key"])

            if len(runs) == 1:  # the usual case: straight into ffmpeg, no temporary copy
                remux_stream(segments(runs[0]), output, init=init(runs[0]) if cmaf else None)
            else:
                files: list[tuple[Path, int]] = []
                for number, run in enumerate(runs):
                    path = directory / f"run-{number:04d}.{'mp4' if cmaf else 'ts'}"
                    with path.open("wb") as out:
                        if cmaf:
                            join_cmaf(init(run), segments(run), out)
                        else:
                            splice_ts(segments(run), out)
                    end = timeline.offsets_90k[run[-1]] + timeline.record(run[-1])["duration_90k"]
                    files.append((path, end - timeline.offsets_90k[run[0]]))
                remux_mp4(files, output)
                for path, _ in files:
                    path.unlink()
        remuxed = time.perf_counter()
        key = vod_key(stream_id, f"{rendition}.mp4")
        size = output.stat().st_size
        self.store.put_file(
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
        frame = first_frame(*self.playable(timeline, top, poster_index))
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
            index = timeline.index_at(k * grid.interval_ms * MS_90K)
            if index not in decoded:
                segment = self.playable(timeline, low, index)
                decoded[index] = first_frame(*segment).reformat(grid.width, grid.height, "yuv420p")
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
