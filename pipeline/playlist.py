"""HLS playlists: models, the live sliding window, and pure render functions.

A live media playlist only ever lists segments that exist, in sequence order and without
gaps: a segment that arrives before its predecessor waits in `pending` until the gap fills.
Renditions of one stream share sequence numbers (GOP N = segment N everywhere), so players can
switch at any segment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pipeline.timebase import CLOCK_90K


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    sequence: int
    duration_90k: int
    uri: str
    discontinuity: bool = False
    program_date_time_ms: int = 0
    size_bytes: int = 0
    start_pts_90k: int | None = None
    init_uri: str = ""  # fMP4 (CMAF): the init segment it needs (EXT-X-MAP); "" for MPEG-TS

    @property
    def duration_s(self) -> float:
        return self.duration_90k / CLOCK_90K


@dataclass(frozen=True, slots=True)
class Variant:
    uri: str
    bandwidth_bps: int  # peak
    average_bandwidth_bps: int
    width: int
    height: int
    fps: float
    codecs: str
    name: str


def _pdt(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def target_duration(segments: Iterable[SegmentEntry], floor: int = 1) -> int:
    """EXT-X-TARGETDURATION: every EXTINF rounded to the nearest integer must fit under it."""
    return max([floor, *(math.floor(s.duration_s + 0.5) for s in segments)])


def render_media_playlist(
    segments: Sequence[SegmentEntry],
    *,
    media_sequence: int,
    discontinuity_sequence: int = 0,
    target_duration_s: int | None = None,
    ended: bool = False,
    vod: bool = False,
) -> str:
    fmp4 = any(segment.init_uri for segment in segments)
    lines = [
        "#EXTM3U",
        # fMP4 segments need EXT-X-MAP outside an I-frame playlist: version 6 (RFC 8216, 7)
        "#EXT-X-VERSION:6" if fmp4 else "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target_duration_s or target_duration(segments)}",
        f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}",
    ]
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    if vod:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    init_uri = ""
    for index, segment in enumerate(segments):
        if segment.discontinuity and index > 0:
            lines.append("#EXT-X-DISCONTINUITY")
        if segment.init_uri and (segment.init_uri != init_uri or segment.discontinuity):
            lines.append(f'#EXT-X-MAP:URI="{segment.init_uri}"')
            init_uri = segment.init_uri
        if segment.program_date_time_ms:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(segment.program_date_time_ms)}")
        lines.append(f"#EXTINF:{segment.duration_s:.3f},")
        lines.append(segment.uri)
    if ended or vod:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def render_master_playlist(variants: Sequence[Variant]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in sorted(variants, key=lambda v: v.bandwidth_bps, reverse=True):
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={v.bandwidth_bps},"
            f"AVERAGE-BANDWIDTH={v.average_bandwidth_bps},"
            f"RESOLUTION={v.width}x{v.height},FRAME-RATE={v.fps:.3f},"
            f'CODECS="{v.codecs}",NAME="{v.name}"'
        )
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class LiveWindow:
    """One rendition's live playlist state: a window of the newest `size` segments.

    Plain data (`to_dict`/`from_dict`) so it can live in a changelog table and a restarted
    packager continues the same playlist.
    """

    size: int
    segments: list[SegmentEntry] = field(default_factory=list)
    pending: dict[int, SegmentEntry] = field(default_factory=dict)
    next_sequence: int | None = None
    discontinuity_sequence: int = 0
    ended: bool = False
    end_sequence: int | None = None
    max_duration_s: int = 1
    # a jump bigger than this between one segment's end and the next one's start is marked
    # as a discontinuity even when the producer did not flag it
    jump_tolerance_90k: int = 9_000

    def end_at(self, sequence: int) -> bool:
        """The stream ends after segment `sequence - 1`; ENDLIST once all before it are in."""
        self.end_sequence = sequence
        return self._settle_end()

    def _settle_end(self) -> bool:
        if self.ended or self.end_sequence is None:
            return False
        if self.next_sequence is None or self.next_sequence >= self.end_sequence:
            self.ended = True
            return True
        return False

    def add(self, segment: SegmentEntry) -> bool:
        """Take a segment; True when the visible playlist changed. Duplicates (a replayed
        or re-produced SegmentReady) and segments already slid out are ignored."""
        if self.next_sequence is None:
            self.next_sequence = segment.sequence
        if segment.sequence < self.next_sequence or segment.sequence in self.pending:
            return False
        self.pending[segment.sequence] = segment
        changed = False
        while self.next_sequence in self.pending:
            entry = self.pending.pop(self.next_sequence)
            if self.segments and not entry.discontinuity and self._jumped(self.segments[-1], entry):
                entry = replace(entry, discontinuity=True)
            self.segments.append(entry)
            self.next_sequence += 1
            changed = True
        while len(self.segments) > self.size:
            self.segments.pop(0)
            # the new first segment's DISCONTINUITY tag is no longer rendered: count it
            if self.segments[0].discontinuity:
                self.discontinuity_sequence += 1
        if changed:
            self.max_duration_s = max(self.max_duration_s, target_duration(self.segments))
            self._settle_end()
        return changed

    def _jumped(self, before: SegmentEntry, after: SegmentEntry) -> bool:
        if before.start_pts_90k is None or after.start_pts_90k is None:
            return False
        expected = before.start_pts_90k + before.duration_90k
        return abs(after.start_pts_90k - expected) > self.jump_tolerance_90k

    @property
    def media_sequence(self) -> int:
        return self.segments[0].sequence if self.segments else 0

    def render(self) -> str:
        return render_media_playlist(
            self.segments,
            media_sequence=self.media_sequence,
            discontinuity_sequence=self.discontinuity_sequence,
            target_duration_s=self.max_duration_s,
            ended=self.ended,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pending"] = [asdict(s) for s in self.pending.values()]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LiveWindow:
        window = cls(
            size=data["size"],
            segments=[SegmentEntry(**s) for s in data["segments"]],
            next_sequence=data["next_sequence"],
            discontinuity_sequence=data["discontinuity_sequence"],
            ended=data["ended"],
            end_sequence=data["end_sequence"],
            max_duration_s=data["max_duration_s"],
        )
        window.pending = {s["sequence"]: SegmentEntry(**s) for s in data["pending"]}
        return window


@dataclass(slots=True)
class BandwidthMeter:
    """Peak and average bits per second of a rendition's segments (for the master playlist)."""

    peak_bps: int = 0
    total_bits: int = 0
    total_90k: int = 0

    def add(self, size_bytes: int, duration_90k: int) -> None:
        if duration_90k <= 0:
            return
        self.peak_bps = max(self.peak_bps, size_bytes * 8 * CLOCK_90K // duration_90k)
        self.total_bits += size_bytes * 8
        self.total_90k += duration_90k

    @property
    def average_bps(self) -> int:
        return self.total_bits * CLOCK_90K // self.total_90k if self.total_90k else 0
