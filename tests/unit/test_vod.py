"""The VOD worker's pure parts: timeline, chapters, WebVTT, DATERANGE, thumbnail grid."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import MediaError
from workers.vod.chapters import Chapter, chapters_for, chapters_vtt, vtt_time
from workers.vod.history import stream_id_parts
from workers.vod.playlists import daterange_lines, vod_master_playlist, vod_media_playlist
from workers.vod.thumbnails import ThumbnailGrid
from workers.vod.timeline import SegmentSet, Timeline

SID = "demo-20260101T000000Z-abcd"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEG = 180_000  # 2 s


def ready(
    sequence: int,
    rendition: str = "360p30",
    *,
    pts: int | None = None,
    duration: int = SEG,
    discontinuity: bool = False,
    pdt: int | None = None,
    end: bool = False,
) -> dict[str, Any]:
    height = int(rendition.split("p")[0])
    return {
        "stream_id": SID,
        "channel": "demo",
        "rendition": rendition,
        "sequence": sequence,
        "key": f"streams/{SID}/{rendition}/{sequence:06d}.ts",
        "start_pts_90k": sequence * SEG if pts is None else pts,
        "duration_90k": duration,
        "size_bytes": 100_000,
        "bitrate_bps": 400_000,
        "width": height * 16 // 9,
        "height": height,
        "fps": 30.0,
        "codecs": "avc1.64001e,mp4a.40.2",
        "discontinuity": discontinuity,
        "program_date_time_ms": T0 + sequence * 2000 if pdt is None else pdt,
        "ingest_time_ms": T0,
        "renditions": ["360p30", "160p30"],
        "end_of_stream": end,
    }


def segment_set(*records: dict[str, Any]) -> SegmentSet:
    found = SegmentSet(SID)
    for record in records:
        found.add(record)
    return found


def both(sequence: int, **kwargs: Any) -> list[dict[str, Any]]:
    return [ready(sequence, r, **kwargs) for r in ("160p30", "360p30")]


def test_duplicates_are_kept_once_and_completion_needs_every_end_marker() -> None:
    found = segment_set(ready(0), ready(0), ready(1), ready(2, end=True))
    assert sorted(found.segments["360p30"]) == [0, 1]
    assert found.duplicates == 1
    assert not found.complete(["360p30", "160p30"])
    assert found.complete(["360p30"])
    found.add(ready(2, "160p30", end=True))
    assert found.complete([])  # nothing expected: the announced renditions


def test_timeline_orders_renditions_highest_first_and_sums_durations() -> None:
    found = segment_set(*both(0), *both(1), *both(2, duration=135_000))
    timeline = Timeline.build(found, ["160p30", "360p30"])
    assert timeline.renditions == ("360p30", "160p30")
    assert timeline.offsets_90k == (0, SEG, 2 * SEG)
    assert timeline.total_ms == 5500
    assert timeline.runs() == [range(0, 3)]


@pytest.mark.parametrize(
    ("second_run", "why"),
    [
        ({"discontinuity": True}, "flagged"),
        ({"pts": 0}, "timestamps start over"),
    ],
    ids=["discontinuity-flag", "pts-jump"],
)
def test_a_reconnect_opens_a_new_run(second_run: dict[str, Any], why: str) -> None:
    records = [*both(0), *both(1)]
    records += [ready(2, r, **second_run) for r in ("160p30", "360p30")]
    records += [ready(3, r, pts=SEG if "pts" in second_run else None) for r in ("160p30", "360p30")]
    timeline = Timeline.build(segment_set(*records), ["360p30", "160p30"])
    assert timeline.breaks == {2}, why
    assert timeline.runs() == [range(0, 2), range(2, 4)]
    text = vod_media_playlist(timeline, "360p30")
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert text.index("#EXT-X-DISCONTINUITY") < text.index("000002.ts")
    assert text.count("#EXT-X-PROGRAM-DATE-TIME") == 2  # where each run starts


def test_a_missing_gop_is_a_cut_and_a_segment_only_one_rendition_has_is_left_out() -> None:
    records = [*both(0), *both(1), *both(3), ready(4, "360p30")]
    timeline = Timeline.build(segment_set(*records), ["360p30", "160p30"])
    assert timeline.sequences == (0, 1, 3)
    assert timeline.breaks == {2}
    assert timeline.dropped == 1


def test_no_segment_is_a_media_error() -> None:
    with pytest.raises(MediaError, match="no segment"):
        Timeline.build(SegmentSet(SID), ["360p30"])


def test_vod_playlist_is_a_finished_vod_with_relative_segment_names() -> None:
    timeline = Timeline.build(segment_set(*both(0), *both(1)), ["360p30", "160p30"])
    text = vod_media_playlist(timeline, "160p30")
    lines = text.splitlines()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in lines
    assert lines[-1] == "#EXT-X-ENDLIST"
    assert [line for line in lines if not line.startswith("#")] == ["000000.ts", "000001.ts"]
    master = vod_master_playlist(timeline)
    assert "360p30/index.m3u8" in master and "RESOLUTION=640x360" in master
    assert master.index("360p30/") < master.index("160p30/")


def test_wall_clock_maps_to_media_time_across_a_gap() -> None:
    # run 1: 0-4 s at T0; the streamer is away 30 s; run 2 starts at T0 + 34 s
    records = [*both(0), *both(1)]
    records += both(2, pts=0, discontinuity=True, pdt=T0 + 34_000)
    records += both(3, pts=SEG, pdt=T0 + 36_000)
    timeline = Timeline.build(segment_set(*records), ["360p30", "160p30"])
    assert timeline.offset_of_wall(T0 + 1_500) == 1_500 * 90
    assert timeline.offset_of_wall(T0 + 10_000) == 2 * SEG  # in the gap: the next run
    assert timeline.offset_of_wall(T0 + 35_000) == 2 * SEG + 1_000 * 90
    assert timeline.offset_of_wall(T0 + 99_000) == timeline.total_90k
    assert timeline.wall_at(2 * SEG + 1_000 * 90) == T0 + 35_000
    assert timeline.wall_at(1_000 * 90) == T0 + 1_000


def _ten_segments() -> Timeline:
    records = [r for n in range(10) for r in both(n)]
    return Timeline.build(segment_set(*records), ["360p30", "160p30"])


def test_chapters_follow_title_and_category_changes() -> None:
    timeline = _ten_segments()
    updates = [
        {"updated_ms": T0 + 6_000, "title": "Speedrun", "category": "Games"},
        {"updated_ms": T0 + 6_500, "title": "Speedrun", "category": "Games"},  # no change
        {"updated_ms": T0 + 12_000, "title": "Q&A <live>", "category": None},
        {"updated_ms": T0 + 12_400, "title": "Q&A <live>", "category": "Talk"},  # too close
        {"updated_ms": T0 + 60_000, "title": "after the end", "category": None},
    ]
    chapters = chapters_for(timeline, ("Just chatting", None), updates)
    assert chapters == [
        Chapter(0, "Just chatting", None),
        Chapter(6_000, "Speedrun", "Games"),
        Chapter(12_000, "Q&A <live>", "Talk"),
    ]
    vtt = chapters_vtt(chapters, timeline.total_ms)
    assert vtt.startswith("WEBVTT\n\n")
    assert "00:00:06.000 --> 00:00:12.000\nSpeedrun (Games)" in vtt
    assert "00:00:12.000 --> 00:00:20.000\nQ&amp;A &lt;live&gt; (Talk)" in vtt


def test_without_any_title_there_are_no_chapters() -> None:
    assert chapters_for(_ten_segments(), (None, None), []) == []


def test_chapters_become_dateranges_on_the_playlist_clock() -> None:
    timeline = _ten_segments()
    chapters = [Chapter(0, 'say "hi"', None), Chapter(6_000, "B", "Games")]
    lines = daterange_lines(chapters, timeline)
    assert lines == [
        '#EXT-X-DATERANGE:ID="chapter-1",CLASS="com.onair.chapter",'
        'START-DATE="2026-01-01T00:00:00.000Z",DURATION=6.000,X-TITLE="say \'hi\'"',
        '#EXT-X-DATERANGE:ID="chapter-2",CLASS="com.onair.chapter",'
        'START-DATE="2026-01-01T00:00:06.000Z",DURATION=14.000,X-TITLE="B",X-CATEGORY="Games"',
    ]
    text = vod_media_playlist(timeline, "360p30", chapters)
    assert text.index("#EXT-X-DATERANGE") > text.index("#EXT-X-INDEPENDENT-SEGMENTS")
    assert text.index("#EXT-X-DATERANGE") < text.index("#EXTINF")


def test_thumbnail_grid_and_its_vtt() -> None:
    grid = ThumbnailGrid.plan(25_000, (640, 360), interval_s=10)
    assert (grid.count, grid.width, grid.height, grid.columns, grid.rows) == (3, 160, 90, 3, 1)
    vtt = grid.vtt(25_000)
    assert "00:00:20.000 --> 00:00:25.000\nthumbs.jpg#xywh=320,0,160,90" in vtt
    long = ThumbnailGrid.plan(48 * 3_600_000, (1920, 1080), interval_s=10)
    assert long.rows * long.height <= 65_000 and long.interval_ms > 10_000


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "00:00:00.000"), (61_001, "00:01:01.001"), (3_723_004, "01:02:03.004")],
    ids=["zero", "minute", "hour"],
)
def test_vtt_time(ms: int, text: str) -> None:
    assert vtt_time(ms) == text


def test_stream_id_parts() -> None:
    assert stream_id_parts(SID) == ("demo", T0)
    assert stream_id_parts("not-a-stream-id") is None
