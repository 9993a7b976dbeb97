"""Anonymous RTMP clients flood the ingest while a real publisher streams: the publisher's
segments keep arriving on time.

ffmpeg publishes 24 s of 360p30 in real time; from 4 s to 18 s, four attacker threads keep
reconnecting to the same ingest and sending what probing found stalled it (`bench.rtmp_flood`:
zero-length `0xC3` messages before `connect`, chunk size 1, AMF0 data before `connect`). A
viewer polls the live playlist and notes when each segment first appears. Every segment must
appear within a bound of its predecessor during the flood as before it, the playlist must
end complete, and the ingest must have closed and counted the attackers.
"""

from __future__ import annotations

import itertools
import re
import statistics
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from bench.rtmp_flood import AttackResult, attacker
from tests.harness import Platform, parse_media_playlist, wait_port

pytestmark = pytest.mark.e2e

STREAM_S = 24
FLOOD = (4.0, 18.0)
SEGMENT_S = 2.0
KINDS = ("c3", "chunk1", "amf", "c3")


def _flood(port: int, kind: str, until: float, results: list[AttackResult]) -> None:
    while time.monotonic() < until:
        result = AttackResult()
        attacker(port, kind, min(3.0, max(0.1, until - time.monotonic())), result)
        results.append(result)


def test_a_flood_of_anonymous_clients_leaves_the_publishers_segments_on_time(
    tmp_path: Path,
) -> None:
    platform = Platform(tmp_path, ONAIR_PLAYLIST_WINDOW="100", ONAIR_LADDER="360p30:800")
    platform.cli("topics")
    channel = f"e2e_{uuid.uuid4().hex[:8]}"
    key = platform.create_channel(channel)["stream_key"]
    metrics_port = 0
    try:
        ingest = platform.start("ingest", "ingest")
        del ingest
        metrics_port = int(platform.health_urls["ingest"].split(":")[2].split("/")[0])
        platform.start("package", "package")
        platform.start("http", "http")
        platform.start("transcode", "transcode", "--rendition", "360p30")
        wait_port(platform.rtmp_port)
        wait_port(platform.http_port)
        platform.wait_ready("packager", "transcode.360p30")
        streamer = platform.publish(key, STREAM_S, size="640x360")
        started = time.monotonic()
        appeared: dict[str, float] = {}
        results: list[AttackResult] = []
        threads: list[threading.Thread] = []
        playlist = f"/live/{channel}/360p30/index.m3u8"
        while streamer.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed >= FLOOD[0] and not threads:
                until = started + FLOOD[1]
                threads = [
                    threading.Thread(
                        target=_flood, args=(platform.rtmp_port, kind, until, results), daemon=True
                    )
                    for kind in KINDS
                ]
                for thread in threads:
                    thread.start()
            text = platform.get_or_none(playlist)
            if text:
                for segment in parse_media_playlist(text.decode())["segments"]:
                    appeared.setdefault(segment["uri"], elapsed)
            time.sleep(0.25)
        for thread in threads:
            thread.join(10)
        assert streamer.returncode == 0, Path(platform.last_publish_log).read_text()
        deadline = time.monotonic() + 120
        info = parse_media_playlist("")
        while time.monotonic() < deadline and not info["ended"]:
            info = parse_media_playlist(platform.get(playlist).decode())
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            metrics = response.read().decode()
    finally:
        platform.stop()

    assert info["ended"], platform.log_tail("ingest")
    sequences = [int(s["uri"].rsplit("/", 1)[1][:-3]) for s in info["segments"]]
    assert sequences == list(range(len(sequences)))
    assert abs(sum(s["duration"] for s in info["segments"]) - STREAM_S) <= SEGMENT_S
    times = [appeared[s["uri"]] for s in info["segments"] if s["uri"] in appeared]
    gaps = [(later, later - earlier) for earlier, later in itertools.pairwise(times)]
    during = [gap for at, gap in gaps if FLOOD[0] + SEGMENT_S <= at <= FLOOD[1]]
    before = [gap for at, gap in gaps if at < FLOOD[0]]
    print(f"segment gaps before the flood {before}, during {during}")
    assert len(during) >= 4, gaps
    assert max(during) <= 2 * SEGMENT_S + 1.0, ("a segment came late during the flood", gaps)
    assert statistics.median(during) <= SEGMENT_S + 0.5, gaps
    assert len(results) >= len(KINDS), "the attackers never got to send"
    closed = sum(1 for r in results if r.closed_after_s is not None)
    assert closed >= len(KINDS), [(r.bytes_sent, r.closed_after_s) for r in results]
    counted = re.search(r"^onair_rtmp_protocol_errors_total (\S+)$", metrics, re.M)
    assert counted and float(counted[1]) >= closed, "the closed attackers were not counted"
