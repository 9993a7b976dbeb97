"""The object store goes away for 10 s mid-stream and comes back: nothing is lost.

ffmpeg publishes 24 s of 360p30; two rungs, the packager and the origin run as their own
processes on the real Kafka and S3. From 6 s to 16 s the S3 server is stopped
(`infra/s3 stop`, then `start`). Meanwhile a viewer keeps asking the origin for the live
playlist. Roles wait the outage out (`topics.deadletter`: the same event again, for up to
120 s) instead of crash-looping; the origin serves the last playlist it had (stale-if-error)
instead of a 5xx. Afterwards every sequence is listed exactly once in both renditions, the
playlists end, and the segments written after the outage decode.
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import ROOT, Platform, parse_media_playlist
from tests.mediafixtures import probe_frames

pytestmark = pytest.mark.e2e

STREAM_S = 24
OUTAGE = (6.0, 16.0)
RUNGS = ("360p30", "160p30")


@dataclass
class OutageRun:
    platform: Platform
    channel: str
    statuses: list[int] = field(default_factory=list)
    during_outage: list[int] = field(default_factory=list)  # asked while S3 was down
    playlists: dict[str, str] = field(default_factory=dict)
    work: Path = Path()


def _s3(action: str) -> None:
    subprocess.run([str(ROOT / "infra" / "s3"), action], check=True, timeout=120)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OutageRun]:
    work = tmp_path_factory.mktemp("outage")
    platform = Platform(work, ONAIR_PLAYLIST_WINDOW="100", ONAIR_LADDER="360p30:800,160p30:300")
    platform.cli("topics")
    channel = f"e2e_{uuid.uuid4().hex[:8]}"
    key = platform.create_channel(channel)["stream_key"]
    outage = OutageRun(platform, channel, work=work)
    stopped = False
    restart: threading.Timer | None = None
    try:
        platform.start_live(RUNGS)
        streamer = platform.publish(key, STREAM_S, size="640x360")
        started = time.monotonic()
        playlist = platform.url(f"/live/{channel}/360p30/index.m3u8")
        seen_playlist = False
        while streamer.poll() is None:
            elapsed = time.monotonic() - started
            if OUTAGE[0] <= elapsed and restart is None and outage.statuses.count(200) > 0:
                _s3("stop")
                stopped = True
                # started again from OUTAGE[1] on, in the background: the viewer keeps asking
                # while S3Proxy comes up (several seconds)
                restart = threading.Timer(OUTAGE[1] - elapsed, _s3, args=("start",))
                restart.start()
            if stopped and restart is not None and not restart.is_alive():
                stopped = False
            status = _status(playlist)
            seen_playlist = seen_playlist or status == 200
            if seen_playlist:
                outage.statuses.append(status)
                if stopped:
                    outage.during_outage.append(status)
            time.sleep(0.5)
        if restart is not None:
            restart.join(120)
        stopped = False
        assert streamer.returncode == 0, Path(platform.last_publish_log).read_text()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            texts = {r: platform.get_or_none(f"/live/{channel}/{r}/index.m3u8") for r in RUNGS}
            if all(t and parse_media_playlist(t.decode())["ended"] for t in texts.values()):
                break
            time.sleep(1)
        for rendition in RUNGS:
            text = platform.get(f"/live/{channel}/{rendition}/index.m3u8").decode()
            outage.playlists[rendition] = text
        yield outage
    finally:
        if restart is not None:
            restart.join(120)
            _s3("start")  # idempotent: makes sure S3 is back for what runs next
        platform.stop()


def _diagnose(run: OutageRun) -> str:
    names = ["package", "transcode-360p30", "http"]
    return "\n".join(f"--- {n}\n{run.platform.log_tail(n)}" for n in names)


def test_viewers_got_no_server_error_during_the_outage(run: OutageRun) -> None:
    # asked every 0.5 s from the stop until S3Proxy answers again (10 s + its start-up)
    assert len(run.during_outage) >= 8, run.statuses
    assert all(status == 200 for status in run.statuses), (run.statuses, _diagnose(run))


def test_every_sequence_is_listed_once_and_the_playlists_end(run: OutageRun) -> None:
    for rendition in RUNGS:
        info = parse_media_playlist(run.playlists[rendition])
        assert info["ended"], f"{rendition} never ended\n{_diagnose(run)}"
        sequences = [int(s["uri"].rsplit("/", 1)[1][:-3]) for s in info["segments"]]
        assert sequences == list(range(len(sequences))), (rendition, sequences)
        total = sum(s["duration"] for s in info["segments"])
        assert abs(total - STREAM_S) <= info["target_duration"], (rendition, total)


def test_segments_written_across_the_outage_decode(run: OutageRun) -> None:
    info = parse_media_playlist(run.playlists["360p30"])
    for index, segment in enumerate(info["segments"]):
        path = run.work / "viewer" / f"{index:04d}.ts"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(run.platform.get(f"/live/{run.channel}/360p30/{segment['uri']}"))
        frames = probe_frames(path)
        assert frames and frames[0]["key_frame"] == 1, path
