from __future__ import annotations

import pytest

from pipeline.playlist import (
    BandwidthMeter,
    LiveWindow,
    SegmentEntry,
    Variant,
    render_master_playlist,
    render_media_playlist,
)


def seg(n: int, *, disc: bool = False, seconds: float = 2.0) -> SegmentEntry:
    return SegmentEntry(n, round(seconds * 90_000), f"s/{n:06d}.ts", disc, 1_700_000_000_000)


def test_media_playlist_lists_segments_with_timing() -> None:
    text = render_media_playlist([seg(3), seg(4, seconds=2.4)], media_sequence=3)
    assert text.splitlines()[:4] == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-MEDIA-SEQUENCE:3",
    ]
    assert "#EXTINF:2.400,\ns/000004.ts" in text
    assert "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z" in text
    assert "#EXT-X-ENDLIST" not in text


def test_vod_playlist_ends() -> None:
    text = render_media_playlist([seg(0)], media_sequence=0, vod=True)
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")


def test_window_slides_and_counts_discontinuities() -> None:
    window = LiveWindow(size=3)
    for n in range(5):
        window.add(seg(n, disc=(n == 2)))
    assert [s.sequence for s in window.segments] == [2, 3, 4]
    assert window.media_sequence == 2 and window.discontinuity_sequence == 1
    assert "#EXT-X-DISCONTINUITY\n" not in window.render()
    window.add(seg(5, disc=True))
    assert "#EXT-X-DISCONTINUITY\n" in window.render()


def test_out_of_order_segments_wait_for_the_gap() -> None:
    window = LiveWindow(size=6)
    assert window.add(seg(0))
    assert not window.add(seg(2))
    assert [s.sequence for s in window.segments] == [0]
    assert window.add(seg(1))
    assert [s.sequence for s in window.segments] == [0, 1, 2]


@pytest.mark.parametrize("again", [0, 1], ids=["first", "last"])
def test_duplicates_are_ignored(again: int) -> None:
    window = LiveWindow(size=6)
    window.add(seg(0))
    window.add(seg(1))
    assert not window.add(seg(again))
    assert [s.sequence for s in window.segments] == [0, 1]


def test_state_survives_a_round_trip_through_plain_data() -> None:
    window = LiveWindow(size=4)
    for n in (0, 1, 3):
        window.add(seg(n))
    restored = LiveWindow.from_dict(window.to_dict())
    assert restored.render() == window.render()
    restored.add(seg(2))
    assert [s.sequence for s in restored.segments] == [0, 1, 2, 3]


def test_master_playlist_orders_by_bandwidth() -> None:
    low = Variant("160p30/index.m3u8", 300_000, 250_000, 284, 160, 30.0, "avc1.42c00c", "160p30")
    high = Variant(
        "720p30/index.m3u8", 3_000_000, 2_500_000, 1280, 720, 30.0, "avc1.64001f", "720p30"
    )
    text = render_master_playlist([low, high])
    lines = text.splitlines()
    assert lines[3].startswith("#EXT-X-STREAM-INF:BANDWIDTH=3000000,AVERAGE-BANDWIDTH=2500000,")
    assert 'RESOLUTION=1280x720,FRAME-RATE=30.000,CODECS="avc1.64001f"' in lines[3]
    assert lines[4] == "720p30/index.m3u8" and lines[6] == "160p30/index.m3u8"


def test_bandwidth_meter_tracks_peak_and_average() -> None:
    meter = BandwidthMeter()
    meter.add(250_000, 180_000)  # 1 Mbps over 2 s
    meter.add(750_000, 180_000)  # 3 Mbps
    assert meter.peak_bps == 3_000_000 and meter.average_bps == 2_000_000


def test_end_marker_waits_for_the_last_segment() -> None:
    window = LiveWindow(size=6)
    window.add(seg(0))
    assert not window.end_at(2)
    assert "#EXT-X-ENDLIST" not in window.render()
    window.add(seg(1))
    assert window.ended and window.render().endswith("#EXT-X-ENDLIST\n")


def test_a_timestamp_jump_is_a_discontinuity() -> None:
    window = LiveWindow(size=6)
    window.add(SegmentEntry(0, 180_000, "a", start_pts_90k=0))
    window.add(SegmentEntry(1, 180_000, "b", start_pts_90k=180_000))
    window.add(SegmentEntry(2, 180_000, "c", start_pts_90k=9_000_000))
    assert [s.discontinuity for s in window.segments] == [False, False, True]


def test_fmp4_segments_follow_their_init_segment() -> None:
    """A VOD of CMAF segments: EXT-X-MAP before the first segment, again where the init
    changes and after a discontinuity; version 6 (RFC 8216 §7: EXT-X-MAP outside an I-frame
    playlist); read back by an independent parser (the `m3u8` package)."""
    import dataclasses

    import m3u8

    def cmaf(n: int, init: str, disc: bool = False) -> SegmentEntry:
        return dataclasses.replace(seg(n, disc=disc), uri=f"{n:06d}.m4s", init_uri=init)

    entries = [cmaf(0, "init-a.mp4"), cmaf(1, "init-a.mp4"), cmaf(2, "init-a.mp4", True),
               cmaf(3, "init-b.mp4")]  # fmt: skip
    text = render_media_playlist(entries, media_sequence=0, vod=True)
    assert "#EXT-X-VERSION:6" in text
    assert text.count("#EXT-X-MAP:") == 3
    parsed = m3u8.loads(text)
    assert [s.uri for s in parsed.segments] == [f"{n:06d}.m4s" for n in range(4)]
    assert [s.init_section.uri for s in parsed.segments] == ["init-a.mp4"] * 3 + ["init-b.mp4"]
    assert [s.discontinuity for s in parsed.segments] == [False, False, True, False]
    lines = text.splitlines()
    assert lines.index('#EXT-X-MAP:URI="init-a.mp4"') < lines.index("#EXTINF:2.000,")
    assert "#EXT-X-MAP" not in render_media_playlist([seg(0)], media_sequence=0)
