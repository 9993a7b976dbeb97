"""The VOD's HLS playlists: media playlists (PLAYLIST-TYPE VOD, a DISCONTINUITY at every
break, chapters as `EXT-X-DATERANGE`) and the master playlist."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pipeline.playlist import (
    BandwidthMeter,
    Variant,
    render_master_playlist,
    render_media_playlist,
)
from workers.vod.chapters import Chapter
from workers.vod.timeline import MS_90K, Timeline


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
            f'START-DATE="{iso_ms(timeline.wall_at(chapter.start_ms * MS_90K))}"',
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
