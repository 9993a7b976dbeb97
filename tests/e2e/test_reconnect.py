"""Reconnect grace across ingest processes: the stream's state lives in `onair.streams`.

The streamer publishes to ingest A, drops, and publishes again to ingest B within the grace:
one stream, a discontinuity in the playlists, no lost segment, one VOD. Publishing again after
the grace starts a second stream: a second VOD.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Platform, free_port, parse_media_playlist, records_since, wait_port
from topics.specs import STREAMS

pytestmark = pytest.mark.e2e

GRACE_S = 4

Event = tuple[str, dict[str, Any]]


@dataclass
class Run:
    platform: Platform
    channel: str
    events: list[Event] = field(default_factory=list)
    playlist: str = ""
    vods: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Run]:
    work: Path = tmp_path_factory.mktemp("reconnect")
    platform = Platform(
        work,
        ONAIR_PLAYLIST_WINDOW="100",
        ONAIR_RECONNECT_GRACE_S=str(GRACE_S),
        ONAIR_LADDER="360p30:800",
    )
    platform.cli("topics")
    channel = f"rc_{uuid.uuid4().hex[:8]}"
    key = platform.create_channel(channel)["stream_key"]
    port_b = free_port()
    try:
        platform.start("ingest-a", "ingest")
        platform.start("ingest-b", "ingest", ONAIR_RTMP_PORT=str(port_b))
        platform.start("package", "package")
        platform.start("http", "http")
        platform.start("vod", "vod")
        platform.start("transcode", "transcode", "--rendition", "360p30")
        wait_port(platform.rtmp_port)
        wait_port(port_b)
        wait_port(platform.http_port)
        platform.wait_ready("packager", "transcode.360p30", "vod")
        first = platform.publish(key, 6, size="640x360")
        assert first.wait(60) == 0
        time.sleep(1)  # well inside the grace
        second = platform.publish(key, 6, size="640x360", port=port_b)
        assert second.wait(60) == 0
        bootstrap = platform.env.get("ONAIR_KAFKA_BOOTSTRAP", "localhost:9092")
        playlist = ""
        deadline = time.monotonic() + GRACE_S + 90  # the grace runs out: the stream ends
        while time.monotonic() < deadline and not parse_media_playlist(playlist)["ended"]:
            time.sleep(0.5)
            playlist = (platform.get_or_none(f"/live/{channel}/360p30/index.m3u8") or b"").decode()
        third = platform.publish(key, 4, size="640x360")  # after the grace: a new stream
        assert third.wait(60) == 0
        run = Run(
            platform,
            channel,
            records_since(bootstrap, STREAMS, time.time() - 600, key=channel, count=6),
            playlist,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(run.vods) < 2:
            time.sleep(1)
            body = platform.get_or_none(f"/api/vods?channel={channel}")
            run.vods = [v for v in json.loads(body or b"[]") if v["status"] == "complete"]
        yield run
    finally:
        platform.stop()


def test_reconnect_within_grace_on_another_ingest_is_one_stream(run: Run) -> None:
    names = [name for name, _ in run.events]
    assert names[:4] == [
        "StreamStarted",
        "StreamInterrupted",
        "StreamResumed",
        "StreamInterrupted",
    ], names
    assert names[4] == "StreamEnded", names
    ids = {record["stream_id"] for _, record in run.events[:5]}
    assert len(ids) == 1, run.events


def test_reconnect_after_grace_is_a_new_stream(run: Run) -> None:
    names = [name for name, _ in run.events]
    assert names[5] == "StreamStarted", names
    assert run.events[5][1]["stream_id"] != run.events[0][1]["stream_id"]


def test_playlist_marks_one_discontinuity_and_loses_no_segment(run: Run) -> None:
    info = parse_media_playlist(run.playlist)
    assert info["ended"]
    sequences = [int(s["uri"].rsplit("/", 1)[1][:-3]) for s in info["segments"]]
    assert sequences == list(range(len(sequences)))
    assert [s["discontinuity"] for s in info["segments"]].count(True) == 1
    total = sum(s["duration"] for s in info["segments"])
    assert abs(total - 12) <= 2.5, total


def test_one_vod_per_stream(run: Run) -> None:
    started = [record["stream_id"] for name, record in run.events if name == "StreamStarted"]
    assert sorted(v["stream_id"] for v in run.vods) == sorted(started), run.vods
    first = json.loads(run.platform.get(f"/api/vods/{started[0]}"))
    assert first["discontinuities"] == 1
    assert abs(first["duration_ms"] - 12_000) <= 2_500, first["duration_ms"]
