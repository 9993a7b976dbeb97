"""An ingest that dies or freezes mid-stream, with a second ingest running: real processes
(tests/harness.py), ffmpeg publishing, the lease log deciding.

- SIGKILL: the killed ingest renews nothing more; once its lease lapsed and the grace ran out,
  the other ingest ends the stream — end marker after the last GOP, `StreamEnded` — within
  TTL + grace + MARGIN_S of the kill, and the VOD worker makes it a complete VOD with every
  GOP as a segment.
- A second publisher on the other ingest is refused while the stream is live; after the
  SIGKILL, a publisher that comes back through the other ingest once the lease lapsed (within
  the grace) resumes the same stream: one discontinuity, one VOD.
- SIGSTOP past the TTL, then SIGCONT: the other ingest ends the stream meanwhile; the frozen
  one, woken, finds its lease unproven, fences the publish (ffmpeg's connection is closed) and
  none of the stream's GOPs lands after the end marker, nor any lifecycle event after
  `StreamEnded`.

Short timings by env: lease TTL 6 s (renewed every 1 s; the holder stops taking media 3 s
after its last acknowledged renewal), reconnect grace 2 s. MARGIN_S covers the keeper's tick
(0.5 s), the END's round trip, reading the stream's last GOP and writing the marker and
`StreamEnded` on a loaded two-core machine.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from objectstore import open_store
from pipeline.keys import vod_media_key
from pipeline.settings import Settings
from schemas.codec import Codec
from tests.harness import Platform, free_port, parse_media_playlist, wait_port
from topics.reader import Start, read
from topics.specs import GOPS, STREAMS, VODS
from topics.table import TableReader

pytestmark = pytest.mark.e2e

TTL_S, RENEW_S, GRACE_S = 6, 1, 2
MARGIN_S = 4
RUNG = "160p30"


@dataclass
class Failover:
    platform: Platform
    streams: TableReader
    vods: TableReader
    bootstrap: str
    survivor_port: int = 0

    def ingest(self, name: str, **env: str) -> int:
        """Start an ingest process on a port of its own; → the port, once it serves."""
        port = free_port()
        self.platform.start(name, "ingest", ONAIR_RTMP_PORT=str(port), **env)
        wait_port(port)
        self.platform.wait_healthy(name)
        return port

    def channel(self) -> tuple[str, str]:
        name = f"fo_{uuid.uuid4().hex[:8]}"
        return name, self.platform.create_channel(name)["stream_key"]

    def latest(self, channel: str, kind: str, timeout_s: float) -> dict[str, Any]:
        found = self.streams.wait_for(lambda d: d.get(channel, {}).get("_type") == kind, timeout_s)
        record = self.streams.get(channel)
        assert found and record is not None, f"{channel}: no {kind}; latest {record}"
        return record


@pytest.fixture(scope="module")
def failover(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Failover]:
    platform = Platform(
        tmp_path_factory.mktemp("failover"),
        ONAIR_LADDER=f"{RUNG}:300",
        ONAIR_RECONNECT_GRACE_S=str(GRACE_S),
        ONAIR_INGEST_LEASE_TTL_S=str(TTL_S),
        ONAIR_INGEST_LEASE_RENEW_S=str(RENEW_S),
    )
    platform.cli("topics")
    streams = TableReader(kafka_bootstrap, STREAMS, None)
    vods = TableReader(kafka_bootstrap, VODS, "Vod")
    try:
        platform.start("transcode", "transcode", "--rendition", RUNG)
        platform.start("vod", "vod")
        streams.start()
        vods.start()
        run = Failover(platform, streams, vods, kafka_bootstrap)
        run.survivor_port = run.ingest("ingest-b")  # it ends (or resumes) what others leave
        platform.wait_ready("vod", f"transcode.{RUNG}")
        yield run
    finally:
        for proc in platform.procs.values():  # a stopped process would not hear SIGTERM
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
        streams.stop()
        vods.stop()
        platform.stop()


def stream_chunks(bootstrap: str, started: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(offset, GopChunk) of the stream, in log order, from its first chunk on."""
    codec = Codec()
    key = started["stream_id"].encode()
    return [
        (msg.offset() or 0, codec.expect("GopChunk", msg.value()))
        for msg in read(
            bootstrap,
            GOPS,
            partitions=[started["gops_partition"]],
            start=Start.offset(started["gops_first_offset"]),
        )
        if msg.key() == key
    ]


def vod_sequences(platform: Platform, stream_id: str) -> list[int]:
    settings = Settings.from_env(platform.env)
    store = open_store(settings.storage_url, **settings.s3_options())
    text = store.get(vod_media_key(stream_id, RUNG)).body.decode()
    info = parse_media_playlist(text)
    assert info["ended"], text
    return [int(s["uri"].rsplit("/", 1)[-1].split(".")[0]) for s in info["segments"]]


def test_a_killed_ingest_s_stream_ends_within_the_lease_and_grace_and_becomes_a_vod(
    failover: Failover,
) -> None:
    platform = failover.platform
    port = failover.ingest("ingest-a")
    channel, key = failover.channel()
    streamer = platform.publish(key, 40, size="320x180", port=port)
    started = failover.latest(channel, "StreamStarted", 30)
    second = platform.publish(key, 3, size="320x180", port=failover.survivor_port)
    assert second.wait(30) != 0, "a second publisher on the other ingest is refused"
    assert "already live" in (platform.logs / "ingest-b.log").read_text(errors="replace")
    time.sleep(4)  # a few GOPs in
    platform.kill("ingest-a")
    killed_at = time.monotonic()
    ended = failover.latest(channel, "StreamEnded", TTL_S + GRACE_S + 60)
    recovery_s = time.monotonic() - killed_at
    print(f"SIGKILL → StreamEnded: {recovery_s:.1f} s (TTL {TTL_S} s + grace {GRACE_S} s)")
    assert recovery_s <= TTL_S + GRACE_S + MARGIN_S, platform.log_tail("ingest-b")
    assert streamer.wait(30) != 0, "ffmpeg lost its ingest"
    assert ended["stream_id"] == started["stream_id"]
    assert "stopped renewing" in ended["reason"]
    chunks = stream_chunks(failover.bootstrap, started)
    complete = [c["sequence"] for _, c in chunks if c["last_part"] and not c["end_of_stream"]]
    assert complete == list(range(len(complete))) and len(complete) >= 2, complete
    assert chunks[-1][1]["end_of_stream"] and chunks[-1][0] == ended["gops_last_offset"]
    assert chunks[-1][1]["sequence"] == ended["last_sequence"] + 1 == len(complete)

    stream_id = started["stream_id"]
    assert failover.vods.wait_for(lambda d: stream_id in d, 90), platform.log_tail("vod")
    vod = failover.vods.get(stream_id)
    assert vod is not None and vod["status"] == "complete", vod
    assert vod["segment_count"] == len(complete)
    assert vod_sequences(platform, stream_id) == list(range(len(complete)))


def test_a_frozen_ingest_is_fenced_when_it_wakes_and_lands_nothing_after_the_end(
    failover: Failover,
) -> None:
    platform = failover.platform
    port = failover.ingest("ingest-c")
    channel, key = failover.channel()
    streamer = platform.publish(key, 60, size="320x180", port=port)
    started = failover.latest(channel, "StreamStarted", 30)
    time.sleep(4)
    frozen = platform.procs["ingest-c"]
    frozen.send_signal(signal.SIGSTOP)
    try:
        ended = failover.latest(channel, "StreamEnded", TTL_S + GRACE_S + 60)
        time.sleep(1)
    finally:
        frozen.send_signal(signal.SIGCONT)
    try:
        exit_code = streamer.wait(20)
    except subprocess.TimeoutExpired:
        streamer.kill()
        raise AssertionError("the fenced ingest kept the publish open") from None
    assert exit_code != 0
    time.sleep(2)  # anything the woken ingest still had to send has had time to land
    log = (platform.logs / "ingest-c.log").read_text(errors="replace")
    assert "fenced" in log and "publish closed by the ingest" in log, log[-3000:]
    metrics_url = platform.health_urls["ingest-c"].replace("/healthz", "/metrics")
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    assert "onair_ingest_fenced_publishes_total 1.0" in metrics
    chunks = stream_chunks(failover.bootstrap, started)
    assert chunks[-1][1]["end_of_stream"] and chunks[-1][0] == ended["gops_last_offset"]
    assert [c["end_of_stream"] for _, c in chunks].count(True) == 1
    latest = failover.streams.get(channel)
    assert latest is not None and latest["_type"] == "StreamEnded", latest


def test_a_publisher_back_through_another_ingest_after_its_ingest_died_resumes_the_stream(
    failover: Failover,
) -> None:
    platform = failover.platform
    # the dead ingest's lease carries its grace: long enough to reconnect after the lapse
    port = failover.ingest("ingest-d", ONAIR_RECONNECT_GRACE_S="10")
    channel, key = failover.channel()
    first = platform.publish(key, 30, size="320x180", port=port)
    started = failover.latest(channel, "StreamStarted", 30)
    time.sleep(5)
    platform.kill("ingest-d")
    assert first.wait(30) != 0
    time.sleep(TTL_S + 0.5)  # its lease lapsed (a TTL after its last renewal at the latest)
    second = platform.publish(key, 6, size="320x180", port=failover.survivor_port)
    resumed = failover.latest(channel, "StreamResumed", 30)
    assert resumed["stream_id"] == started["stream_id"], "the same stream goes on"
    assert second.wait(60) == 0, platform.log_tail("ingest-b")
    ended = failover.latest(channel, "StreamEnded", GRACE_S + 30)
    assert ended["stream_id"] == started["stream_id"]
    chunks = stream_chunks(failover.bootstrap, started)
    complete = [c for _, c in chunks if c["last_part"] and not c["end_of_stream"]]
    assert [c["sequence"] for c in complete] == list(range(len(complete)))
    cuts = [c["sequence"] for c in complete if c["discontinuity"]]
    assert cuts == [resumed["next_sequence"]], cuts
    stream_id = started["stream_id"]
    assert failover.vods.wait_for(lambda d: stream_id in d, 90), platform.log_tail("vod")
    vod = failover.vods.get(stream_id)
    assert vod is not None and vod["status"] == "complete", vod
    assert vod["discontinuities"] == 1
    assert vod_sequences(platform, stream_id) == list(range(len(complete)))
