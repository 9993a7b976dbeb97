"""The store layout, as users' URLs and existing objects depend on it."""

from __future__ import annotations

from pipeline import keys


def test_the_layout() -> None:
    assert keys.segment_key("s-1", "720p30", 7) == "streams/s-1/720p30/000007.ts"
    assert keys.segment_key("s-1", "720p30", "000007") == "streams/s-1/720p30/000007.ts"
    assert keys.live_master_key("demo") == "live/demo/master.m3u8"
    assert keys.live_media_key("demo", "160p30") == "live/demo/160p30/index.m3u8"
    assert keys.live_segment_uri("s-1", 12) == "s-1/000012.ts"
    assert keys.vod_master_key("s-1") == "vod/s-1/master.m3u8"
    assert keys.vod_media_key("s-1", "360p30") == "vod/s-1/360p30/index.m3u8"
    assert keys.vod_key("s-1", "720p30.mp4") == "vod/s-1/720p30.mp4"
