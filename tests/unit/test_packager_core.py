"""The packager's core on dict tables: the classic live playlist lists each segment as the
workers stored it — MPEG-TS, or (no MPEG-TS written, `ONAIR_TS_SEGMENTS=0`) the CMAF segment
after its init segment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import m3u8
import pytest

from objectstore.local import LocalStore
from schemas.codec import Codec
from workers.packager.core import Packager

SID = "demo-20260101T000000Z-abcd"


def ready(sequence: int, *, ts: bool, init: str = "init-0123456789abcdef.mp4") -> dict[str, Any]:
    base = f"streams/{SID}/360p30"
    cmaf_key = f"{base}/{sequence:06d}.m4s"
    return {
        "stream_id": SID,
        "channel": "demo",
        "rendition": "360p30",
        "sequence": sequence,
        "key": f"{base}/{sequence:06d}.ts" if ts else cmaf_key,
        "start_pts_90k": sequence * 180_000,
        "duration_90k": 180_000,
        "size_bytes": 250_000,
        "bitrate_bps": 1_000_000,
        "width": 640,
        "height": 360,
        "fps": 30.0,
        "codecs": "avc1.64001e,mp4a.40.2",
        "program_date_time_ms": 1_767_225_600_000 + sequence * 2000,
        "ingest_time_ms": 1_767_225_602_000 + sequence * 2000,
        "renditions": ["360p30"],
        "cmaf_key": cmaf_key,
        "init_key": f"{base}/{init}",
    }


@pytest.mark.parametrize("ts", [True, False], ids=["mpeg-ts", "cmaf-only"])
def test_the_classic_playlist_lists_the_segments_the_workers_stored(
    tmp_path: Path, ts: bool
) -> None:
    store = LocalStore(tmp_path)
    packager = Packager(store, {}, {})
    codec = Codec()
    for sequence in range(3):
        packager.on_event(codec.encode("SegmentReady", ready(sequence, ts=ts)))
    text = store.get("live/demo/360p30/index.m3u8").body.decode()
    playlist = m3u8.loads(text)
    extension = "ts" if ts else "m4s"
    assert [s.uri for s in playlist.segments] == [f"{SID}/{n:06d}.{extension}" for n in range(3)]
    if ts:
        assert "#EXT-X-MAP" not in text and "#EXT-X-VERSION:3" in text
    else:
        assert "#EXT-X-VERSION:6" in text and text.count("#EXT-X-MAP") == 1
        init = f"{SID}/init-0123456789abcdef.mp4"
        assert all(s.init_section.uri == init for s in playlist.segments)
    assert "360p30/index.m3u8" in store.get("live/demo/master.m3u8").body.decode()
