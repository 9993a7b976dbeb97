"""Low-latency HLS playlists (draft-pantos-hls-rfc8216bis §4.4.3.7 to 4.4.5, Apple's LL-HLS
authoring spec): the live state of one rendition built from its PartReady records, and the
pure render of its media playlist, its delta update and the stream's master playlist.

    rendition = LlRendition("720p30", window=30)
    rendition.add(record)                   # a PartReady: True when the playlist changed
    rendition.has(msn, part)                # is that part (or anything after it) listed?
    text = render_media(rendition, others, config, skip=False)
    blocking_query(request_query)           # (msn, part, skip) a playlist request asks for

Every complete segment is listed with its parts for the last `PART_WINDOW_TARGETS` target
durations; the segment in progress is listed by its parts, then an `EXT-X-PRELOAD-HINT` for
the next part. A part is listed once its PartReady came (its object is durable by then), in
order: a part that comes out of order is held back until the ones before it are listed,
a repeated one is ignored, and a segment whose last part never came (its GOP failed on this
rung) is dropped when the next segment begins, which then opens with a discontinuity.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.timebase import CLOCK_90K

PART_WINDOW_TARGETS = 3  # parts stay listed for this many target durations (§4.4.3.7)
SKIP_TARGETS = 6  # CAN-SKIP-UNTIL, in target durations (§4.4.3.8: at least six)
HOLD_BACK_PARTS = 3  # PART-HOLD-BACK, in part targets (§4.4.3.8: at least three)
_SMALL_INT = re.compile(r"[0-9]{1,9}")  # an _HLS_msn or _HLS_part value
VERSION = 9  # EXT-X-SKIP needs 9; EXT-X-MAP with fMP4 needs 6
MAX_HELD = 64  # parts waiting for an earlier one; more means the earlier one never comes


@dataclass(frozen=True, slots=True)
class LlConfig:
    part_target_s: float = 0.5
    target_duration_s: int = 2  # EXT-X-TARGETDURATION: fixed, the segment (GOP) target

    @property
    def part_hold_back_s(self) -> float:
        return HOLD_BACK_PARTS * self.part_target_s


@dataclass(frozen=True, slots=True)
class LlPart:
    index: int
    duration_90k: int
    uri: str
    independent: bool


@dataclass(slots=True)
class LlSegment:
    sequence: int
    pdt_ms: int
    init_uri: str
    discontinuity: bool
    parts: list[LlPart] = field(default_factory=list)
    uri: str = ""  # the whole segment, once its last part came
    duration_90k: int = 0
    bitrate_bps: int = 0

    @property
    def complete(self) -> bool:
        return bool(self.uri)

    @property
    def listed_90k(self) -> int:
        return self.duration_90k if self.complete else sum(p.duration_90k for p in self.parts)


@dataclass(slots=True)
class LlRendition:
    """One rendition of one live stream: complete segments (the newest `window`), the
    segment in progress, and what the master playlist needs (resolution, codecs, rate)."""

    name: str
    window: int = 30
    segments: list[LlSegment] = field(default_factory=list)
    current: LlSegment | None = None  # in progress: some parts, not the last
    held: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # out of order
    discontinuity_sequence: int = 0
    ended: bool = False
    version: int = 0  # bumped on every change: renders are cached per version
    width: int = 0
    height: int = 0
    fps: float = 0.0
    codecs: str = ""
    peak_bps: int = 0

    # --- what is listed --------------------------------------------------------------

    @property
    def media_sequence(self) -> int:
        if self.segments:
            return self.segments[0].sequence
        return self.current.sequence if self.current else 0

    @property
    def last_msn(self) -> int:
        """The newest segment listed, complete or in progress (-1: nothing yet)."""
        if self.current is not None and self.current.parts:
            return self.current.sequence
        return self.segments[-1].sequence if self.segments else -1

    @property
    def last_part(self) -> int:
        if self.current is not None and self.current.parts:
            return self.current.parts[-1].index
        return self.segments[-1].parts[-1].index if self.segments else -1

    def has(self, msn: int, part: int | None) -> bool:
        """Is segment `msn` (complete, with `part` None) or its part `part` listed? A later
        segment counts: a request for a part the segment never had is answered too. An ended
        playlist answers everything: it will not change again."""
        if self.ended:
            return True
        if part is None:
            complete = self.segments[-1].sequence if self.segments else -1
            return msn <= complete
        if msn < self.last_msn:
            return True
        return msn == self.last_msn and part <= self.last_part

    def next_part(self) -> tuple[int, int] | None:
        """The part a preload hint names: the one after the newest listed."""
        if self.ended:
            return None
        if self.current is not None and self.current.parts:
            return self.current.sequence, self.current.parts[-1].index + 1
        if self.segments:
            return self.segments[-1].sequence + 1, 0
        return None

    # --- taking records ------------------------------------------------------------

    def add(self, record: Mapping[str, Any]) -> bool:
        """Take one PartReady record (its part durable); True when the playlist changed."""
        if record["end_of_stream"]:
            return self._end()
        if self.ended:
            return False
        key = (record["sequence"], record["part"])
        current = self.current
        newest = (current.sequence, current.parts[-1].index) if current and current.parts else None
        if record["last"] and current is not None and key == newest:
            self._complete(current, record)  # the part was listed; now its segment is complete
            self.version += 1
            return True
        if key <= (self.last_msn, self.last_part) or key in self.held:
            return False  # a repeat (a successor re-produced it) or already slid out
        self.held[key] = dict(record)
        changed = False
        while True:
            nxt = self._next_held()
            if nxt is None:
                break
            self._list(self.held.pop(nxt))
            changed = True
        listed = (self.last_msn, self.last_part)
        for stale in [k for k in self.held if k <= listed or len(self.held) > MAX_HELD]:
            del self.held[stale]
        if changed:
            self.version += 1
        return changed

    def _next_held(self) -> tuple[int, int] | None:
        """The held part to list next: the expected one, else the first part of a later
        segment (the segment in progress, or the one after the newest, never came whole: its
        GOP failed on this rung, or this origin started in its middle)."""
        if not self.held:
            return None
        expected = self.next_part()
        if expected in self.held:
            return expected
        starts = [k for k in self.held if k[1] == 0 and k[0] > self.last_msn]
        return min(starts) if starts else None

    def _list(self, record: Mapping[str, Any]) -> None:
        sequence, index = record["sequence"], record["part"]
        current = self.current
        if index == 0:
            jumped = (
                current is not None  # the previous segment never completed
                or (bool(self.segments) and sequence != self.segments[-1].sequence + 1)
            )
            current = self.current = LlSegment(
                sequence,
                record["program_date_time_ms"],
                record["init_key"],
                bool(record["discontinuity"]) or jumped,
            )
        assert current is not None
        current.parts.append(
            LlPart(index, record["duration_90k"], record["key"], record["independent"])
        )
        self.width, self.height = record["width"] or self.width, record["height"] or self.height
        self.fps = record["fps"] or self.fps
        self.codecs = record["codecs"] or self.codecs
        if record["last"]:
            self._complete(current, record)

    def _complete(self, current: LlSegment, record: Mapping[str, Any]) -> None:
        """The segment's last part came: list the whole segment."""
        current.uri = record["segment_key"]
        current.duration_90k = record["segment_duration_90k"]
        current.bitrate_bps = record["bitrate_bps"]
        self.peak_bps = max(self.peak_bps, record["bitrate_bps"])
        self.segments.append(current)
        self.current = None
        while len(self.segments) > self.window:
            self.segments.pop(0)
            if self.segments[0].discontinuity:
                self.discontinuity_sequence += 1

    def _end(self) -> bool:
        if self.ended:
            return False
        self.ended = True
        self.current = None  # an unfinished segment is never completed now
        self.held.clear()
        self.version += 1
        return True


def _pdt(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(duration_90k: int) -> str:
    return f"{duration_90k / CLOCK_90K:.5f}"


def target_duration(rendition: LlRendition, config: LlConfig) -> int:
    """EXT-X-TARGETDURATION: the configured segment target, or more when a publisher's GOPs
    are longer (every EXTINF, rounded, must fit under it)."""
    return max(
        [config.target_duration_s]
        + [math.floor(s.duration_90k / CLOCK_90K + 0.5) for s in rendition.segments]
    )


def render_media(
    rendition: LlRendition,
    others: Sequence[LlRendition],
    config: LlConfig,
    *,
    uri: Any,
    report_uri: Any,
    skip: bool = False,
) -> str:
    """The LL-HLS media playlist of `rendition`; with `skip`, its delta update (§6.2.5.1):
    segments more than CAN-SKIP-UNTIL before the end replaced by one EXT-X-SKIP.
    `uri(key)` turns an object key into the URI written; `report_uri(name)` names a sibling
    rendition's playlist for EXT-X-RENDITION-REPORT."""
    target = target_duration(rendition, config)
    skip_until_s = SKIP_TARGETS * target
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"CAN-SKIP-UNTIL={skip_until_s:.1f},PART-HOLD-BACK={config.part_hold_back_s:.3f}",
        f"#EXT-X-PART-INF:PART-TARGET={config.part_target_s:.3f}",
        f"#EXT-X-MEDIA-SEQUENCE:{rendition.media_sequence}",
    ]
    if rendition.discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{rendition.discontinuity_sequence}")
    listed = list(rendition.segments)
    if rendition.current is not None:
        listed.append(rendition.current)
    total_90k = sum(s.listed_90k for s in listed)
    parts_from_90k = total_90k - PART_WINDOW_TARGETS * target * CLOCK_90K
    skip_before_90k = total_90k - skip_until_s * CLOCK_90K
    position, skipped, map_uri = 0, 0, ""
    for n, segment in enumerate(listed):
        position += segment.listed_90k
        if skip and segment.complete and position <= skip_before_90k:
            skipped += 1
            continue
        if skipped and n == skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        if segment.discontinuity and n > 0:
            lines.append("#EXT-X-DISCONTINUITY")
        if segment.init_uri != map_uri:
            map_uri = segment.init_uri
            lines.append(f'#EXT-X-MAP:URI="{uri(map_uri)}"')
        if segment.pdt_ms:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(segment.pdt_ms)}")
        if not segment.complete or position > parts_from_90k:
            for part in segment.parts:
                independent = ",INDEPENDENT=YES" if part.independent else ""
                lines.append(
                    f'#EXT-X-PART:DURATION={_seconds(part.duration_90k)},URI="{uri(part.uri)}"'
                    + independent
                )
        if segment.complete:
            lines.append(f"#EXTINF:{_seconds(segment.duration_90k)},")
            lines.append(uri(segment.uri))
    nxt = rendition.next_part()
    if nxt is not None and listed:
        hint = _part_key(listed[-1], nxt)
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{uri(hint)}"')
    for other in others:
        if other.name != rendition.name and other.last_msn >= 0:
            lines.append(
                f'#EXT-X-RENDITION-REPORT:URI="{report_uri(other.name)}",'
                f"LAST-MSN={other.last_msn},LAST-PART={other.last_part}"
            )
    if rendition.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _part_key(newest: LlSegment, nxt: tuple[int, int]) -> str:
    """The object key of part `nxt`, spelled like the newest listed part's key."""
    sequence, index = nxt
    sample = newest.parts[-1].uri
    folder = sample.rsplit("/", 1)[0]
    return f"{folder}/{sequence:06d}.{index}.m4s"


@dataclass(frozen=True, slots=True)
class LlVariant:
    uri: str
    rendition: LlRendition


def render_master(variants: Iterable[LlVariant]) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    ordered = sorted(variants, key=lambda v: v.rendition.peak_bps, reverse=True)
    for variant in ordered:
        r = variant.rendition
        average = _average_bps(r.segments) or r.peak_bps
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={r.peak_bps},AVERAGE-BANDWIDTH={average},"
            f"RESOLUTION={r.width}x{r.height},FRAME-RATE={r.fps:.3f},"
            f'CODECS="{r.codecs}",NAME="{r.name}"'
        )
        lines.append(variant.uri)
    return "\n".join(lines) + "\n"


def _average_bps(segments: Sequence[LlSegment]) -> int:
    bits = sum(s.bitrate_bps * s.duration_90k for s in segments)
    duration = sum(s.duration_90k for s in segments)
    return bits // duration if duration else 0


def blocking_query(query: Mapping[str, str]) -> tuple[int | None, int | None, bool] | None:
    """(`_HLS_msn`, `_HLS_part`, `_HLS_skip`) of a media playlist request (§6.2.5.2), or None
    when they break the rules: a part without an msn, a value that is not a small integer
    (the origin answers 400)."""
    msn_text, part_text = query.get("_HLS_msn"), query.get("_HLS_part")
    if (part_text is not None and msn_text is None) or not all(
        t is None or _SMALL_INT.fullmatch(t) is not None for t in (msn_text, part_text)
    ):
        return None
    msn = int(msn_text) if msn_text is not None else None
    part = int(part_text) if part_text is not None else None
    return msn, part, query.get("_HLS_skip") in ("YES", "v2")


def media_cache_control(msn: int | None, target_s: float) -> str:
    """A blocking answer names exactly what it holds (cacheable for six target durations);
    a plain one for a second."""
    return f"public, max-age={6 * target_s}" if msn is not None else "public, max-age=1"
