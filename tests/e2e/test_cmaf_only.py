"""`ONAIR_TS_SEGMENTS=0`: the platform stores every segment once, as CMAF, end to end.

ffmpeg publishes 8 s of 640x360 into a two-rung ladder (360p30 is the source passed through,
160p30 encoded); ingest, the transcode workers, the packager, the VOD worker and the HTTP
origin run as processes on the real Kafka and S3, all with MPEG-TS turned off. The classic
playlists list fMP4 segments after their init segment and ffprobe, a player without LL-HLS,
decodes the classic master over HTTP; the store holds no `.ts` at all; the VOD is complete and
made of the same CMAF segments, its MP4s decode."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import m3u8
import pytest

from objectstore import open_store
from pipeline.settings import Settings
from tests.harness import Platform, parse_master_playlist, wait_port
from tests.mediafixtures import ffprobe
from topics.specs import STREAMS, VODS
from topics.table import TableReader

pytestmark = pytest.mark.e2e

RUNGS = ["360p30", "160p30"]
STREAM_S = 8


def test_without_mpeg_ts_every_reader_plays_the_cmaf_segments(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    platform = Platform(tmp_path, ONAIR_LADDER="360p30:800,160p30:300", ONAIR_TS_SEGMENTS="0")
    platform.cli("topics")
    channel = f"e2e_cmaf_{uuid.uuid4().hex[:8]}"
    key = platform.create_channel(channel)["stream_key"]
    streams = TableReader(kafka_bootstrap, STREAMS, None)
    vods = TableReader(kafka_bootstrap, VODS, "Vod")
    try:
        platform.start_live(RUNGS)
        platform.start("vod", "vod")
        platform.wait_ready("vod")
        streams.start()
        vods.start()
        wait_port(platform.rtmp_port)
        publisher = platform.publish(key, STREAM_S, size="640x360")

        # live, mid-stream: the classic playlists list CMAF, and a legacy player decodes them
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = (platform.get_or_none(f"/live/{channel}/160p30/index.m3u8") or b"").decode()
            if text.count("#EXTINF") >= 2:
                break
            time.sleep(0.5)
        playlist = m3u8.loads(text)
        assert len(playlist.segments) >= 2, text
        assert "#EXT-X-VERSION:6" in text
        assert all(s.uri.endswith(".m4s") and s.init_section is not None for s in playlist.segments)
        variants = parse_master_playlist(platform.get(f"/live/{channel}/master.m3u8").decode())
        assert sorted(v["NAME"] for v in variants) == sorted(RUNGS)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,height",
             "-of", "csv=p=0", platform.url(f"/live/{channel}/160p30/index.m3u8")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert probe.returncode == 0 and not probe.stderr.strip(), probe.stderr
        assert "video,160" in probe.stdout and "audio" in probe.stdout, probe.stdout

        assert publisher.wait(60) == 0
        assert streams.wait_for(lambda d: d.get(channel, {}).get("_type") == "StreamEnded", 30)
        stream_id = streams.get(channel)["stream_id"]  # type: ignore[index]
        assert vods.wait_for(lambda d: stream_id in d, 90), platform.log_tail("vod")
        vod = vods.get(stream_id)
        assert vod is not None and vod["status"] == "complete", vod
    finally:
        streams.stop()
        vods.stop()
        platform.stop()

    settings = Settings.from_env(platform.env)
    store = open_store(settings.storage_url, **settings.s3_options())
    objects = store.list(f"streams/{stream_id}/")
    assert objects and not [k for k in objects if k.endswith(".ts")], objects[:10]
    for rendition in RUNGS:
        text = store.get(f"vod/{stream_id}/{rendition}/index.m3u8").body.decode()
        segments = m3u8.loads(text).segments
        assert segments and all(s.uri.endswith(".m4s") for s in segments), text
        assert all(f"streams/{stream_id}/{rendition}/{s.uri}" in objects for s in segments)
        path = tmp_path / f"{rendition}.mp4"
        path.write_bytes(store.get(vod["mp4"][rendition]).body)
        info = ffprobe(path, "-count_frames", "-show_streams", "-show_format")
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert int(video["height"]) == int(rendition[:3])
        assert abs(float(info["format"]["duration"]) - STREAM_S) <= 2
        assert int(video["nb_read_frames"]) >= (STREAM_S - 2) * 30
