"""The live pipeline end to end: real ffmpeg publishes RTMP, every role runs as its own process
on the real Kafka and S3, viewers fetch HLS from the origin and ffprobe decodes what they got.

One 30 s 720p30 stream (tone, 2 s keyframe interval) is published once for the module; while
it runs, the 480p30 transcode worker and the packager are killed with SIGKILL, and each is
restarted. The tests then check what a viewer depends on.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from tests.harness import Platform, parse_master_playlist, parse_media_playlist, wait_port
from tests.mediafixtures import probe_frames
from topics.client import make_consumer
from topics.specs import GOPS

pytestmark = pytest.mark.e2e

STREAM_S = 30
EXPECTED = ["720p30", "480p30", "360p30", "160p30"]
FRAME_S = 1 / 30


@dataclass
class LiveRun:
    platform: Platform
    channel: str
    masters_during: list[str] = field(default_factory=list)
    master: str = ""
    playlists: dict[str, str] = field(default_factory=dict)
    segments: dict[str, list[Path]] = field(default_factory=dict)
    refused_exit: int = 0
    refused_stderr: str = ""
    gops_before: dict[int, int] = field(default_factory=dict)
    gops_after: dict[int, int] = field(default_factory=dict)


def _gop_ends(bootstrap: str) -> dict[int, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(GOPS, timeout=10)
    consumer = make_consumer(bootstrap, None)
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(GOPS, p), timeout=10)[1]
            for p in metadata.topics[GOPS].partitions
        }
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[LiveRun]:
    work = tmp_path_factory.mktemp("live")
    platform = Platform(work, ONAIR_PLAYLIST_WINDOW="100", ONAIR_RECONNECT_GRACE_S="1")
    platform.cli("topics")
    channel = f"e2e_{uuid.uuid4().hex[:8]}"
    key = platform.create_channel(channel)["stream_key"]
    live = LiveRun(platform, channel)
    try:
        platform.start("ingest", "ingest")
        platform.start("package", "package", "--verbose")
        platform.start("http", "http")
        for rung in ("1080p60", "720p60", "480p30", "360p30", "160p30"):
            platform.start(f"transcode-{rung}", "transcode", "--rendition", rung)
        wait_port(platform.rtmp_port)
        wait_port(platform.http_port)
        platform.wait_ready(
            "packager", *(f"transcode.{r}" for r in ("720p60", "480p30", "360p30", "160p30"))
        )

        live.gops_before = _gop_ends(kafka_bootstrap)
        refused = platform.publish("live_not-the-key", 3, realtime=False)
        live.refused_exit = refused.wait(60)
        live.refused_stderr = Path(platform.last_publish_log).read_text(errors="replace")
        live.gops_after = _gop_ends(kafka_bootstrap)

        streamer = platform.publish(key, STREAM_S)
        started = time.monotonic()
        killed = {"transcode": False, "package": False}
        while streamer.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed > 10 and not killed["transcode"]:
                platform.kill("transcode-480p30")
                platform.start("transcode-480p30", "transcode", "--rendition", "480p30")
                killed["transcode"] = True
            if elapsed > 16 and not killed["package"]:
                platform.kill("package")
                platform.start("package", "package", "--verbose")
                killed["package"] = True
                platform.wait_ready("packager")
            master = platform.get_or_none(f"/live/{channel}/master.m3u8")
            if master:
                live.masters_during.append(master.decode())
            time.sleep(1)
        assert streamer.returncode == 0, Path(platform.last_publish_log).read_text()
        assert all(killed.values())

        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            texts = {r: platform.get_or_none(f"/live/{channel}/{r}/index.m3u8") for r in EXPECTED}
            if all(t and parse_media_playlist(t.decode())["ended"] for t in texts.values()):
                break
            time.sleep(1)
        live.master = platform.get(f"/live/{channel}/master.m3u8").decode()
        for rendition in EXPECTED:
            text = platform.get(f"/live/{channel}/{rendition}/index.m3u8").decode()
            live.playlists[rendition] = text
            files = []
            for index, segment in enumerate(parse_media_playlist(text)["segments"]):
                path = work / "viewer" / rendition / f"{index:04d}.ts"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(platform.get(f"/live/{channel}/{rendition}/{segment['uri']}"))
                files.append(path)
            live.segments[rendition] = files
        yield live
    finally:
        platform.stop()


def _diagnose(run: LiveRun) -> str:
    names = ["ingest", "package", "transcode-480p30", "transcode-720p60", "http"]
    return "\n".join(f"--- {n}\n{run.platform.log_tail(n)}" for n in names)


def test_every_rendition_ended_with_a_complete_playlist(run: LiveRun) -> None:
    for rendition in EXPECTED:
        info = parse_media_playlist(run.playlists[rendition])
        assert info["ended"], f"{rendition} never ended\n{_diagnose(run)}"


def test_master_lists_the_rungs_the_ladder_rule_gives(run: LiveRun) -> None:
    assert run.masters_during, "the master playlist never appeared while the stream ran"
    for text in [*run.masters_during, run.master]:
        variants = parse_master_playlist(text)
        assert sorted(v["NAME"] for v in variants) == sorted(EXPECTED)
    resolutions = {v["NAME"]: v["RESOLUTION"] for v in parse_master_playlist(run.master)}
    assert resolutions == {
        "720p30": "1280x720",
        "480p30": "852x480",
        "360p30": "640x360",
        "160p30": "284x160",
    }
    for variant in parse_master_playlist(run.master):
        assert int(variant["BANDWIDTH"]) >= int(variant["AVERAGE-BANDWIDTH"]) > 0
        assert variant["CODECS"].startswith("avc1.") and "mp4a.40.2" in variant["CODECS"]


def test_every_segment_of_every_rendition_decodes(run: LiveRun) -> None:
    for rendition, files in run.segments.items():
        assert files, rendition
        for path in files:
            frames = probe_frames(path)  # raises if ffprobe reports any decode error
            assert frames and frames[0]["key_frame"] == 1, f"{path} does not start on an IDR"


def test_renditions_are_aligned(run: LiveRun) -> None:
    durations = {
        r: [s["duration"] for s in parse_media_playlist(run.playlists[r])["segments"]]
        for r in EXPECTED
    }
    counts = {r: len(d) for r, d in durations.items()}
    assert len(set(counts.values())) == 1, counts
    for index in range(counts["720p30"]):
        values = [durations[r][index] for r in EXPECTED]
        assert max(values) - min(values) <= FRAME_S + 0.001, (index, values)


def test_total_duration_is_the_stream_within_one_segment(run: LiveRun) -> None:
    for rendition in EXPECTED:
        info = parse_media_playlist(run.playlists[rendition])
        total = sum(s["duration"] for s in info["segments"])
        assert abs(total - STREAM_S) <= info["target_duration"], (rendition, total)


def test_killed_transcode_worker_lost_no_segment_and_listed_none_twice(run: LiveRun) -> None:
    uris = [s["uri"] for s in parse_media_playlist(run.playlists["480p30"])["segments"]]
    sequences = [int(uri.rsplit("/", 1)[1].removesuffix(".ts")) for uri in uris]
    assert sequences == list(range(len(sequences))), sequences
    assert len(sequences) == len(parse_media_playlist(run.playlists["720p30"])["segments"])


def test_restarted_packager_continued_the_same_playlists(run: LiveRun) -> None:
    for rendition in EXPECTED:
        info = parse_media_playlist(run.playlists[rendition])
        assert info["media_sequence"] == 0, rendition
        assert not any(s["discontinuity"] for s in info["segments"]), rendition
        sequences = [int(s["uri"].rsplit("/", 1)[1][:-3]) for s in info["segments"]]
        assert sequences == list(range(len(sequences))), (rendition, sequences)


def test_wrong_key_is_refused_and_nothing_reaches_the_gop_topic(run: LiveRun) -> None:
    assert run.refused_exit != 0
    assert "not-the-key" not in run.platform.log_tail("ingest", 500)
    assert run.gops_after == run.gops_before


def test_segments_are_served_immutable_and_playlists_short_lived(run: LiveRun) -> None:
    import urllib.request

    first = parse_media_playlist(run.playlists["360p30"])["segments"][0]["uri"]
    base = f"/live/{run.channel}/360p30"
    with urllib.request.urlopen(run.platform.url(f"{base}/{first}")) as response:
        assert response.headers["Content-Type"] == "video/mp2t"
        assert "immutable" in response.headers["Cache-Control"]
    with urllib.request.urlopen(run.platform.url(f"{base}/index.m3u8")) as response:
        assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
        assert "max-age=1" in response.headers["Cache-Control"]


def test_a_viewer_plays_the_whole_stream_with_ffprobe(run: LiveRun) -> None:
    """ffprobe as a real HLS client: reads the master over HTTP and counts video frames."""
    url = run.platform.url(f"/live/{run.channel}/160p30/index.m3u8")
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    counts = [int(line) for line in result.stdout.split() if line.strip()]  # one per program
    assert counts and all(abs(count - STREAM_S * 30) <= 60 for count in counts), counts
