"""The packager's core: one `SegmentReady` event → the tables updated and the live playlists
that changed written; the tables are any mutable mappings, so no Kafka here.

Store layout written here:
    live/<channel>/master.m3u8               master (written once every rendition has a segment)
    live/<channel>/<rendition>/index.m3u8    live media playlist, segments as <stream_id>/N.ts
                                             (<stream_id>/N.m4s after EXT-X-MAP without MPEG-TS)
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import CodecError
from pipeline.keys import live_init_uri, live_master_key, live_media_key, live_segment_uri
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

logger = logging.getLogger(__name__)

PLAYLIST_CACHE_CONTROL = "public, max-age=1"
M3U8 = "application/vnd.apple.mpegurl"


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
            # the segment is its CMAF copy when the workers write no MPEG-TS: fMP4 after its
            # init segment (EXT-X-MAP)
            cmaf = bool(record["key"]) and record["key"] == record["cmaf_key"]
            changed = window.add(
                SegmentEntry(
                    sequence=record["sequence"],
                    duration_90k=record["duration_90k"],
                    uri=live_segment_uri(stream_id, record["sequence"], cmaf=cmaf),
                    init_uri=live_init_uri(stream_id, record["init_key"]) if cmaf else "",
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
