"""Low-latency HLS end to end: a clock-stamped camera publishes RTMP in real time, every role
runs as its own process on the real Kafka and S3, and viewers watch the LL playlists.

One stream (720p30 source into a 360p30 + 160p30 ladder, 2 s GOPs, 0.2 s parts) is published
for the module. While it runs: a watcher checks every LL playlist the origin serves with the
independent checker (tests/llcheck.py) and fetches every part it lists (a playlist must never
name a part that is not there); blocking requests for the next part are timed against the
PartReady events on `onair.parts`; a delta update is asked for; headless Chromium plays the
LL page for 30 s; then the 360p30 transcode worker is SIGKILLed and restarted. After
the stream ends, the final playlists must list every part of every segment once, in order,
and a segment assembled from its parts and the whole segment must both decode.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import m3u8
import pytest
from confluent_kafka import TopicPartition

from schemas.codec import Codec
from tests.clockcam import HEIGHT, STRIP_H, Camera
from tests.harness import Platform
from tests.llcheck import check_ll_media
from topics.client import make_consumer
from topics.specs import PARTS

pytestmark = pytest.mark.e2e

RUNGS = ("360p30", "160p30")
PART_TARGET_S = 0.2
STREAM_S = 90
VIEW_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "glass_view.mjs"


@dataclass
class LlRun:
    platform: Platform
    channel: str
    problems: list[str] = field(default_factory=list)  # checker failures and missing parts
    playlists_checked: int = 0
    parts_fetched: int = 0
    waits: list[tuple[str, int, int, float]] = field(default_factory=list)  # rung, msn, part, t
    produced: dict[tuple[str, int, int], float] = field(default_factory=dict)
    delta: str = ""
    legacy: tuple[int, str] = (0, "")  # ffmpeg (no LL-HLS) reading the LL master: exit, log
    full_before_delta: str = ""
    browser: dict[str, object] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)


def _get(url: str, timeout_s: float = 15.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Watcher(threading.Thread):
    """Polls the LL playlists as a player would, checks them, fetches the parts they list."""

    def __init__(self, run: LlRun, base: str) -> None:
        super().__init__(daemon=True)
        self.run_state, self.base = run, base
        self.stop = threading.Event()
        self.seen: set[str] = set()

    def run(self) -> None:
        run = self.run_state
        while not self.stop.wait(0.3):
            for rung in RUNGS:
                url = f"{self.base}/live/{run.channel}/{rung}/ll.m3u8"
                status, body = _get(url)
                if status != 200:
                    continue
                text = body.decode()
                others = [r for r in RUNGS if r != rung]
                try:
                    checked = check_ll_media(text, others=others, ended="ENDLIST" in text)
                except AssertionError as exc:
                    run.problems.append(f"{rung}: {str(exc).splitlines()[0]}")
                    continue
                run.playlists_checked += 1
                for segment in checked.playlist.segments[-2:]:
                    for part in segment.parts:
                        if part.uri in self.seen:
                            continue
                        got, _ = _get(f"{self.base}/live/{run.channel}/{rung}/{part.uri}")
                        if got != 200:
                            run.problems.append(f"{rung}: listed part {part.uri} answered {got}")
                        self.seen.add(part.uri)
                        run.parts_fetched += 1


def _follow_parts(
    bootstrap: str, run: LlRun, stop: threading.Event, ready: threading.Event
) -> None:
    """When each PartReady was produced (its record's timestamp), first time only. Reads
    every partition from the end it has now (assigned, no group to join): `ready` then."""
    consumer = make_consumer(bootstrap, None)
    codec = Codec()
    try:
        partitions = consumer.list_topics(PARTS, timeout=10).topics[PARTS].partitions
        ends = [TopicPartition(PARTS, p) for p in partitions]
        for tp in ends:
            tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]
        consumer.assign(ends)
        ready.set()
        while not stop.is_set():
            message = consumer.poll(0.1)
            if message is None or message.error():
                continue
            record = codec.expect("PartReady", message.value())
            if record["channel"] != run.channel or record["end_of_stream"]:
                continue
            key = (record["rendition"], record["sequence"], record["part"])
            run.produced.setdefault(key, message.timestamp()[1] / 1000)
    finally:
        consumer.close()


def _next_part(text: str) -> tuple[int, int]:
    playlist = m3u8.loads(text)
    hint = playlist.preload_hint.uri
    msn, part = hint.rsplit("/", 1)[1].removesuffix(".m4s").split(".")
    return int(msn), int(part)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[LlRun]:
    work = tmp_path_factory.mktemp("ll")
    ladder = "360p30:800,160p30:300"
    platform = Platform(
        work, ONAIR_LADDER=ladder, ONAIR_PLAYLIST_WINDOW="100", ONAIR_LL_PLAYLIST_WINDOW="100"
    )
    platform.cli("topics")
    channel = f"ll_{uuid.uuid4().hex[:8]}"
    key = platform.create_channel(channel)["stream_key"]
    live = LlRun(platform, channel)
    base = f"http://127.0.0.1:{platform.http_port}"
    stop = threading.Event()
    ready = threading.Event()
    follower = threading.Thread(
        target=_follow_parts, args=(kafka_bootstrap, live, stop, ready), daemon=True
    )
    watcher = Watcher(live, base)
    camera: Camera | None = None
    try:
        platform.start_live(RUNGS)
        platform.wait_healthy("http")
        follower.start()
        assert ready.wait(30), "the PartReady timing consumer never reached the topic's end"
        rtmp = f"rtmp://127.0.0.1:{platform.rtmp_port}/live/{key}"
        camera = Camera(rtmp, STREAM_S, work / "camera.log")
        camera.start()
        started = time.monotonic()
        deadline = started + 60
        while platform.get_or_none(f"/live/{channel}/ll.m3u8") is None:
            assert time.monotonic() < deadline, "no LL master playlist within 60 s"
            time.sleep(0.3)
        watcher.start()

        # blocking requests for the next part, timed
        media = f"{base}/live/{channel}/360p30/ll.m3u8"
        for _ in range(20):
            status, body = _get(media)
            msn, part = _next_part(body.decode())
            status, body = _get(f"{media}?_HLS_msn={msn}&_HLS_part={part}")
            answered = time.time()
            if status == 200:
                live.waits.append(("360p30", msn, part, answered))

        # a delta update, once more than CAN-SKIP-UNTIL (12 s) of segments is listed
        deadline = time.monotonic() + 60
        while len([x for x in m3u8.loads(_get(media)[1].decode()).segments if x.uri]) < 8:
            assert time.monotonic() < deadline, "fewer than 8 segments listed after 60 s"
            time.sleep(0.5)
        live.full_before_delta = _get(media)[1].decode()
        msn, part = _next_part(live.full_before_delta)
        live.delta = _get(f"{media}?_HLS_msn={msn}&_HLS_part={part}&_HLS_skip=YES")[1].decode()

        # a player without LL-HLS: ffmpeg reads the LL master, plays whole segments
        legacy = subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-i", f"{base}/live/{channel}/ll.m3u8",
             "-t", "6", "-map", "0:v:0", "-f", "null", "-"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        live.legacy = (legacy.returncode, legacy.stderr[-2000:])

        view = subprocess.run(
            ["node", str(VIEW_SCRIPT), "--url", f"{base}/watch/{channel}",
             "--seconds", "30", "--strip-fraction", str(STRIP_H / HEIGHT)],
            capture_output=True, text=True, timeout=150,
        )  # fmt: skip
        live.browser = json.loads(view.stdout or "{}")
        if view.returncode != 0:
            live.browser.setdefault("error", view.stderr[-2000:])

        # the 360p30 worker dies mid-part; its successor redoes the open GOP
        platform.kill("transcode-360p30")
        platform.start("transcode-360p30", "transcode", "--rendition", "360p30")

        camera.join(STREAM_S + 30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            texts = {r: _get(f"{base}/live/{channel}/{r}/ll.m3u8")[1].decode() for r in RUNGS}
            if all("#EXT-X-ENDLIST" in t for t in texts.values()):
                live.final = texts
                break
            time.sleep(1)
        watcher.stop.set()
        watcher.join(10)
        yield live
    finally:
        stop.set()
        watcher.stop.set()
        platform.stop()


def test_every_ll_playlist_served_passes_the_checker_and_lists_only_parts_that_exist(
    run: LlRun,
) -> None:
    assert run.playlists_checked >= 100 and run.parts_fetched >= 200
    assert run.problems == []


def test_a_blocking_request_returns_within_a_part_target_of_the_part(run: LlRun) -> None:
    delays = [
        answered - run.produced[(rung, msn, part)]
        for rung, msn, part, answered in run.waits
        if (rung, msn, part) in run.produced
    ]
    assert len(delays) >= 15, (len(run.waits), len(run.produced))
    delays.sort()
    # answered on the event, not on a poll: nine in ten within one part target, none at a
    # reload interval's distance
    assert delays[int(0.9 * len(delays)) - 1] <= PART_TARGET_S, delays
    assert delays[-1] <= 3 * PART_TARGET_S, delays
    assert statistics.median(delays) >= -0.05, delays  # never before the part existed


def test_a_delta_update_skips_old_segments_and_keeps_the_rest(run: LlRun) -> None:
    checked = check_ll_media(run.delta, others=["160p30"])
    skipped = checked.playlist.skip.skipped_segments
    assert skipped >= 1
    full = m3u8.loads(run.full_before_delta)
    kept = [s.uri for s in checked.playlist.segments if s.uri]
    assert kept[0] in [s.uri for s in full.segments]
    first = full.media_sequence + [s.uri for s in full.segments].index(kept[0])
    assert first == full.media_sequence + skipped


def test_a_player_without_ll_hls_plays_the_same_playlists(run: LlRun) -> None:
    code, log = run.legacy
    assert code == 0 and "rror" not in log, log


def test_the_player_plays_low_latency_without_a_stall(run: LlRun) -> None:
    browser = run.browser
    assert "error" not in browser, browser
    (page,) = browser["pages"]  # type: ignore[misc]
    assert page["ll"] is True
    assert page["stalls"] == 0, (page["stallLog"], page["stallMs"], page["levels"])
    assert len(page["samples"]) >= 25 * 30, len(page["samples"])  # frames shown in 30 s
    latency = statistics.median(page["samples"]) / 1000
    print(f"LL glass-to-glass p50 {latency:.2f} s over {len(page['samples'])} frames")


def test_the_ended_playlists_list_every_part_once_and_the_media_decodes(
    run: LlRun, tmp_path: Path
) -> None:
    assert set(run.final) == set(RUNGS), "the LL playlists did not end"
    base = f"http://127.0.0.1:{run.platform.http_port}/live/{run.channel}"
    for text in run.final.values():
        checked = check_ll_media(text, ended=True)
        playlist = checked.playlist
        uris = [s.uri for s in playlist.segments]
        assert len(uris) == len(set(uris))
        sequences = [int(u.rsplit("/", 1)[1].removesuffix(".m4s")) for u in uris]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
        assert sequences[0] == 0 and len(sequences) >= 30  # the whole stream, kill and all
    # one segment from the middle, from its parts and whole: both decode, the same frames
    rung = "360p30"
    text = _get(f"{base}/{rung}/ll.m3u8")[1].decode()
    lines = text.splitlines()
    init = next(line.split('"')[1] for line in lines if line.startswith("#EXT-X-MAP"))
    init_bytes = _get(f"{base}/{rung}/{init}")[1]
    middle = m3u8.loads(text).segments[-3]
    whole = _get(f"{base}/{rung}/{middle.uri}")[1]
    prefix = middle.uri.removesuffix(".m4s")
    parts = b""
    index = 0
    while True:
        status, body = _get(f"{base}/{rung}/{prefix}.{index}.m4s")
        if status != 200:
            break
        parts += body
        index += 1
    assert index >= 8 and parts == whole
    frames = []
    for name, data in (("parts", parts), ("whole", whole)):
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(init_bytes + data)
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v",
             "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        frames.append(int(out.stdout.strip()))
    assert frames[0] == frames[1] == 60
