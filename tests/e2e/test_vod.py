"""Stream → VOD → rebuild, end to end on the real Kafka and S3.

One 640x360 stream on a two-rung ladder (360p30, 160p30): ffmpeg publishes 10 s in real time,
drops, and publishes 6 s more within the reconnect grace (one stream, a discontinuity); while
it runs, a StreamUpdated (title/category) is produced. Roles run as processes: ingest, the two
transcode workers, the VOD worker and the HTTP origin. Then `onair vod rebuild` re-runs the
stream from onair.ingest.gops with a rung that was not live. Another test makes a stream whose
GOP offsets are below the partition's low watermark (test topics, records deleted) and
expects a clear refusal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from gateway.api.vods import VodApi
from gateway.http.app import create_app
from objectstore import open_store
from objectstore.local import LocalStore
from pipeline.channels import new_stream_id
from pipeline.ladder import Ladder
from schemas.codec import Codec
from schemas.records import end_of_stream_record
from tests.harness import Platform, parse_master_playlist, parse_media_playlist, wait_port
from tests.mediafixtures import ffprobe
from topics.client import CheckedProducer
from topics.specs import STREAMS, VODS
from topics.table import TableReader
from workers.rebuild.output import StoreSpec
from workers.rebuild.plan import ReplayExpired
from workers.rebuild.replay import rebuild

pytestmark = pytest.mark.e2e

LADDER = "360p30:800,160p30:300"
RENDITIONS = ["360p30", "160p30"]
FIRST_S, SECOND_S = 10, 6
STREAM_S = FIRST_S + SECOND_S
UPDATE_AT_S = 5


@dataclass
class VodRun:
    platform: Platform
    channel: str
    stream_id: str = ""
    vod: dict[str, Any] = field(default_factory=dict)
    ended_to_vod_s: float = 0.0


def _wait_stream(streams: TableReader, channel: str, timeout_s: float = 30) -> dict[str, Any]:
    assert streams.wait_for(lambda d: d.get(channel, {}).get("_type") == "StreamStarted", timeout_s)
    record = streams.get(channel)
    assert record is not None
    return record


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[VodRun]:
    work = tmp_path_factory.mktemp("vod")
    platform = Platform(work, ONAIR_LADDER=LADDER, ONAIR_RECONNECT_GRACE_S="3")
    platform.cli("topics")
    channel = f"e2e_vod_{uuid.uuid4().hex[:8]}"
    key = platform.create_channel(channel)["stream_key"]
    result = VodRun(platform, channel)
    streams = TableReader(kafka_bootstrap, STREAMS, None)
    vods = TableReader(kafka_bootstrap, VODS, "Vod")
    codec = Codec()
    try:
        platform.start("ingest", "ingest")
        for rung in RENDITIONS:
            platform.start(f"transcode-{rung}", "transcode", "--rendition", rung)
        platform.start("vod", "vod")
        platform.start("http", "http")
        streams.start()
        vods.start()
        wait_port(platform.rtmp_port)
        wait_port(platform.http_port)
        platform.wait_ready("vod", *(f"transcode.{r}" for r in RENDITIONS))

        first = platform.publish(key, FIRST_S, size="640x360")
        result.stream_id = _wait_stream(streams, channel)["stream_id"]
        time.sleep(max(0.0, UPDATE_AT_S - 2))  # StreamStarted comes after the first 2 s GOP
        update = {
            "stream_id": result.stream_id,
            "channel": channel,
            "updated_ms": int(time.time() * 1000),
            "title": "Part two",
            "category": "Games",
        }
        CheckedProducer(kafka_bootstrap).send(
            STREAMS, channel, codec.encode("StreamUpdated", update)
        )
        assert first.wait(60) == 0
        second = platform.publish(key, SECOND_S, size="640x360")
        assert second.wait(60) == 0

        assert streams.wait_for(lambda d: d.get(channel, {}).get("_type") == "StreamEnded", 30), (
            platform.log_tail("ingest")
        )
        ended_at = time.monotonic()
        done = vods.wait_for(lambda d: result.stream_id in d, 90)
        result.ended_to_vod_s = time.monotonic() - ended_at
        assert done, platform.log_tail("vod")
        vod = vods.get(result.stream_id)
        assert vod is not None
        result.vod = vod
        yield result
    finally:
        streams.stop()
        vods.stop()
        platform.stop()


def test_the_vod_is_complete_with_every_file(run: VodRun) -> None:
    vod = run.vod
    assert vod["status"] == "complete", run.platform.log_tail("vod")
    assert vod["renditions"] == RENDITIONS
    assert sorted(vod["mp4"]) == sorted(RENDITIONS)
    assert vod["poster"] and vod["thumbnails"] and vod["chapters_vtt"]
    assert vod["discontinuities"] == 1
    assert abs(vod["duration_ms"] / 1000 - STREAM_S) <= 2
    assert run.ended_to_vod_s < 10, f"StreamEnded → VOD took {run.ended_to_vod_s:.1f} s"


def test_chapters_follow_the_stream_update(run: VodRun) -> None:
    chapters = run.vod["chapters"]
    assert [c["title"] for c in chapters] == [None, "Part two"]
    assert chapters[1]["category"] == "Games"
    assert 2_000 <= chapters[1]["start_ms"] <= 9_000, chapters
    vtt = run.platform.get(f"/vod/{run.stream_id}/chapters.vtt").decode()
    assert vtt.startswith("WEBVTT") and "Part two (Games)" in vtt


def test_vod_playlists_are_finished_and_mark_the_reconnect(run: VodRun, tmp_path: Path) -> None:
    base = f"/vod/{run.stream_id}"
    variants = parse_master_playlist(run.platform.get(f"{base}/master.m3u8").decode())
    assert sorted(v["NAME"] for v in variants) == sorted(RENDITIONS)
    for rendition in RENDITIONS:
        text = run.platform.get(f"{base}/{rendition}/index.m3u8").decode()
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and "#EXT-X-DATERANGE:" in text
        info = parse_media_playlist(text)
        assert info["ended"]
        assert [s["discontinuity"] for s in info["segments"]].count(True) == 1
        total = sum(s["duration"] for s in info["segments"])
        assert abs(total - STREAM_S) <= info["target_duration"]
        # the workers wrote CMAF (live's default): the VOD lists the fMP4 segments, each run
        # after its init segment, and the origin serves both
        first = info["segments"][0]["uri"]
        assert first == "000000.m4s" and "#EXT-X-VERSION:6" in text
        found = re.search(r'#EXT-X-MAP:URI="(init-[0-9a-f]{16}\.mp4)"', text)
        assert found is not None and text.index("#EXT-X-MAP") < text.index("#EXTINF"), text
        path = tmp_path / f"{rendition}-first.mp4"
        path.write_bytes(
            run.platform.get(f"{base}/{rendition}/{found.group(1)}")
            + run.platform.get(f"{base}/{rendition}/{first}")
        )
        probe = ffprobe(path, "-count_frames", "-show_streams")
        video = next(s for s in probe["streams"] if s["codec_type"] == "video")
        assert int(video["nb_read_frames"]) >= 30 and int(video["height"]) == int(rendition[:3])
        assert any(s["codec_type"] == "audio" for s in probe["streams"])


@pytest.mark.parametrize("rendition", RENDITIONS)
def test_mp4_has_the_streams_duration_and_ffprobe_reads_it_over_http(
    run: VodRun, rendition: str
) -> None:
    url = run.platform.url(f"/vod/{run.stream_id}/{rendition}.mp4")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0 and not probe.stderr.strip(), probe.stderr
    info = json.loads(probe.stdout)
    duration = float(info["format"]["duration"])
    assert abs(duration - STREAM_S) <= 2, duration  # within one segment
    assert abs(duration - run.vod["duration_ms"] / 1000) < 0.2
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    request = urllib.request.Request(url, headers={"Range": "bytes=0-99"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 206 and len(response.read()) == 100
        assert response.headers["Content-Type"] == "video/mp4"


def test_poster_and_thumbnails_are_served(run: VodRun, tmp_path: Path) -> None:
    for name in ("poster.jpg", "thumbs.jpg"):
        path = tmp_path / name
        path.write_bytes(run.platform.get(f"/vod/{run.stream_id}/{name}"))
        stream = ffprobe(path, "-show_streams")["streams"][0]
        assert stream["codec_name"] == "mjpeg"
    vtt = run.platform.get(f"/vod/{run.stream_id}/thumbs.vtt").decode()
    assert vtt.count("thumbs.jpg#xywh=") == 2  # 16 s, one every 10 s


async def test_the_catalog_api_serves_the_vod(
    run: VodRun, kafka_bootstrap: str, tmp_path: Path
) -> None:
    api = VodApi(kafka_bootstrap)
    app = create_app(LocalStore(tmp_path), extra_routes=api.routes, lifespan_hooks=[api.lifespan])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            listing = (await client.get("/api/vods", params={"channel": run.channel})).json()
            one = (await client.get(f"/api/vods/{run.stream_id}")).json()
    assert [v["stream_id"] for v in listing] == [run.stream_id]
    assert one["master_url"] == f"/vod/{run.stream_id}/master.m3u8"
    assert [c["title"] for c in one["chapters"]] == [None, "Part two"]


def test_rebuild_matches_the_live_segments_and_adds_a_rendition(
    run: VodRun, tmp_path: Path
) -> None:
    output = tmp_path / "rebuild"
    started = time.monotonic()
    printed = run.platform.cli(
        "vod", "rebuild", run.stream_id, "--renditions", "360p30,160p30,240p30:400",
        "--output", str(output), "--workers", "2", "--json",
        timeout_s=120,
    )  # fmt: skip
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["renditions"] == ["360p30", "240p30", "160p30"]
    store = LocalStore(output)
    rebuilt = {
        r: parse_media_playlist(store.get(f"vod/{run.stream_id}/{r}/index.m3u8").body.decode())
        for r in ["360p30", "240p30", "160p30"]
    }
    for rendition in RENDITIONS:
        live = parse_media_playlist(
            run.platform.get(f"/vod/{run.stream_id}/{rendition}/index.m3u8").decode()
        )
        assert [(s["uri"], s["duration"], s["discontinuity"]) for s in live["segments"]] == [
            (s["uri"], s["duration"], s["discontinuity"]) for s in rebuilt[rendition]["segments"]
        ]
    new = rebuilt["240p30"]["segments"]
    assert [s["duration"] for s in new] == [s["duration"] for s in rebuilt["360p30"]["segments"]]
    first = store.get(f"streams/{run.stream_id}/240p30/000000.ts").body
    assert first[:1] == b"G"
    # as live, the rebuild writes CMAF too, and its VOD playlists list it
    assert all(s["uri"].endswith(".m4s") for s in new)
    assert store.get(f"streams/{run.stream_id}/240p30/000000.m4s").body[4:8] == b"moof"
    master = parse_master_playlist(store.get(f"vod/{run.stream_id}/master.m3u8").body.decode())
    assert {v["NAME"]: v["RESOLUTION"] for v in master}["240p30"] == "426x240"
    assert summary["segments"] == len(new)
    print(f"rebuild: {summary['speed']}x real time ({time.monotonic() - started:.1f} s wall)")


def test_rebuild_of_an_expired_stream_says_so(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Test topics: three chunks of a stream, then records deleted below the third."""
    suffix = uuid.uuid4().hex[:8]
    streams_topic, gops_topic = f"test-vod-streams-{suffix}", f"test-vod-gops-{suffix}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.create_topics(
        [NewTopic(streams_topic, 1, 1), NewTopic(gops_topic, 1, 1)], operation_timeout=30
    )
    for future in futures.values():
        future.result()
    channel = f"old_{suffix}"
    stream_id = new_stream_id(channel, int(time.time() * 1000))
    codec = Codec()
    producer = CheckedProducer(kafka_bootstrap)
    try:
        offsets = [
            producer.send(
                gops_topic,
                stream_id,
                codec.encode("GopChunk", end_of_stream_record(stream_id, channel, n, None, 0)),
            ).offset
            for n in range(3)
        ]
        for name, record in [
            ("StreamStarted", {
                "stream_id": stream_id, "channel": channel, "started_ms": 1, "width": 640,
                "height": 360, "fps": 30.0, "renditions": ["360p30"], "gops_partition": 0,
                "gops_first_offset": offsets[0],
            }),
            ("StreamEnded", {
                "stream_id": stream_id, "channel": channel, "ended_ms": 2, "reason": "t",
                "last_sequence": 1, "gops_partition": 0, "gops_last_offset": offsets[2],
            }),
        ]:  # fmt: skip
            producer.send(streams_topic, channel, codec.encode(name, record))
        deleted = admin.delete_records([TopicPartition(gops_topic, 0, offsets[2])])
        for future in deleted.values():
            future.result()
        with pytest.raises(ReplayExpired) as caught:
            rebuild(
                kafka_bootstrap,
                stream_id,
                StoreSpec(str(tmp_path / "out")),
                ladder=Ladder.parse(LADDER),
                streams_topic=streams_topic,
                gops_topic=gops_topic,
            )
        message = str(caught.value)
        assert "can no longer be rebuilt" in message and "fell out of retention" in message
        assert f"now starts at offset {offsets[2]}" in message
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.ts"))
    finally:
        for future in admin.delete_topics([streams_topic, gops_topic]).values():
            future.result()


def test_large_files_go_to_s3_in_parts(s3_config: Any, tmp_path: Path) -> None:
    """A long stream's MP4 is hundreds of MB: one PUT that size is refused by S3 servers
    with a request size limit (S3Proxy among them), so it goes up as a multipart upload."""
    store = open_store(
        f"s3://{s3_config.bucket}/e2e-vod-{uuid.uuid4().hex[:8]}",
        endpoint_url=s3_config.endpoint,
        access_key=s3_config.access_key,
        secret_key=s3_config.secret_key,
    )
    path = tmp_path / "big.mp4"
    path.write_bytes(os.urandom(1 << 20) * 40)
    store.put_file("vod/x/big.mp4", path, content_type="video/mp4", cache_control="max-age=1")
    try:
        found = store.get("vod/x/big.mp4")
        assert len(found.body) == 40 << 20 and found.body[: 1 << 20] == path.read_bytes()[: 1 << 20]
        assert found.content_type == "video/mp4" and found.cache_control == "max-age=1"
    finally:
        store.delete("vod/x/big.mp4")
