"""The player's ABR in a real browser on a throttled network: onair's controller settles below
1 Mb/s when the link is 1 Mb/s, with at most one stall, and climbs again when it is fast.

ffmpeg renders a test pattern into a four-rung ladder of 2 s MPEG-TS segments whose rates
straddle 1 Mb/s (≈ 2.2, 1.2, 0.65 and 0.35 Mb/s on the wire, audio included); a publisher
thread lays them out in a LocalStore as the packager does and grows the live playlists by one
segment every 2 s; the gateway app serves them under uvicorn (as in test_player.py). Headless
Chromium (driven by tests/e2e/abr_check.mjs with playwright-core) opens `/watch/<channel>`,
lets the player climb at full speed, throttles the page to 1 Mb/s through the DevTools
protocol (`Network.emulateNetworkConditions`), then lifts the throttle, and reports every
fragment it loaded (level, when, under which phase) and every stall. A last visit with
`?abr=hlsjs` checks that hls.js's own controller can still be picked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from gateway.http.app import create_app
from objectstore.local import LocalStore
from tests.e2e.test_player import free_socket, require_tools

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHECK_SCRIPT = Path(__file__).with_name("abr_check.mjs")
CHANNEL = "abr"
STREAM_ID = "abr-e2e-0001"
SEGMENT_S = 2
SECONDS = 110
WINDOW = 6
THROTTLE_BPS = 1_000_000
CODECS = "avc1.4d401f,mp4a.40.2"  # Main@3.1 (720p needs 3.1) + AAC-LC
PLAYLIST_CC = "public, max-age=1"
SEGMENT_CC = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Rung:
    name: str
    width: int
    height: int
    video_kbps: int


RUNGS = (
    Rung("720p30", 1280, 720, 2000),
    Rung("480p30", 854, 480, 1000),
    Rung("360p30", 640, 360, 500),
    Rung("240p30", 426, 240, 250),
)


def render_ladder(out: Path) -> dict[str, list[tuple[Path, float]]]:
    """Four aligned renditions, 2 s GOPs, cut into 2 s MPEG-TS segments by ffmpeg."""
    split = "".join(f"[v{i}]" for i in range(len(RUNGS)))
    scales = ";".join(f"[v{i}]scale={r.width}:{r.height}[o{i}]" for i, r in enumerate(RUNGS))
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(SECONDS),
        "-filter_complex", f"[0:v]split={len(RUNGS)}{split};{scales}",
    ]  # fmt: skip
    for i in range(len(RUNGS)):
        cmd += ["-map", f"[o{i}]", "-map", "1:a"]
    cmd += [
        "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "main", "-level", "3.1",
        "-pix_fmt", "yuv420p", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "64k", "-ac", "2",
    ]  # fmt: skip
    for i, rung in enumerate(RUNGS):
        cmd += [f"-b:v:{i}", f"{rung.video_kbps}k", f"-maxrate:v:{i}", f"{rung.video_kbps}k"]
        cmd += [f"-bufsize:v:{i}", f"{rung.video_kbps * 2}k"]
    var_stream_map = " ".join(f"v:{i},a:{i},name:{r.name}" for i, r in enumerate(RUNGS))
    cmd += [
        "-f", "hls", "-hls_time", str(SEGMENT_S), "-hls_list_size", "0",
        "-hls_playlist_type", "vod", "-hls_segment_type", "mpegts",
        "-hls_segment_filename", str(out / "%v" / "%06d.ts"),
        "-var_stream_map", var_stream_map,
        str(out / "%v" / "index.m3u8"),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=600)
    renditions: dict[str, list[tuple[Path, float]]] = {}
    for rung in RUNGS:
        segments: list[tuple[Path, float]] = []
        duration = 0.0
        for line in (out / rung.name / "index.m3u8").read_text().splitlines():
            if line.startswith("#EXTINF:"):
                duration = float(line.removeprefix("#EXTINF:").split(",")[0])
            elif line and not line.startswith("#"):
                segments.append((out / rung.name / line, duration))
        renditions[rung.name] = segments
    counts = {name: len(segments) for name, segments in renditions.items()}
    assert len(set(counts.values())) == 1 and min(counts.values()) >= 50, counts
    return renditions


class LivePublisher(threading.Thread):
    """The packager's part: every segment stored, then sliding-window media playlists grown
    by one segment per segment duration, and a master playlist advertising each rung's peak
    (BANDWIDTH) and mean (AVERAGE-BANDWIDTH) segment bitrate, as onair's packager does."""

    def __init__(self, store: LocalStore, renditions: dict[str, list[tuple[Path, float]]]):
        super().__init__(name="abr-live-publisher", daemon=True)
        self.store = store
        self.renditions = renditions
        self.stop_event = threading.Event()
        self.published = 0

    def bandwidths(self) -> dict[str, tuple[int, int]]:
        out = {}
        for rung in RUNGS:
            rates = [path.stat().st_size * 8 / d for path, d in self.renditions[rung.name]]
            out[rung.name] = (math.ceil(max(rates)), math.ceil(sum(rates) / len(rates)))
        return out

    def prepare(self) -> None:
        for name, segments in self.renditions.items():
            for seq, (path, _duration) in enumerate(segments):
                self.store.put(
                    f"streams/{STREAM_ID}/{name}/{seq:06d}.ts",
                    path.read_bytes(),
                    content_type="video/mp2t",
                    cache_control=SEGMENT_CC,
                )
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
        bandwidths = self.bandwidths()
        for rung in RUNGS:
            peak, average = bandwidths[rung.name]
            lines.append(
                f"#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},"
                f"RESOLUTION={rung.width}x{rung.height},FRAME-RATE=30.000,"
                f'CODECS="{CODECS}",NAME="{rung.name}"'
            )
            lines.append(f"{rung.name}/index.m3u8")
        self._put_playlist(f"live/{CHANNEL}/master.m3u8", lines)
        self.publish(4)

    def publish(self, count: int) -> None:
        first = max(0, count - WINDOW)
        for name, segments in self.renditions.items():
            window = segments[first:count]
            target = math.ceil(max(d for _p, d in window))
            lines = [
                "#EXTM3U",
                "#EXT-X-VERSION:3",
                f"#EXT-X-TARGETDURATION:{target}",
                f"#EXT-X-MEDIA-SEQUENCE:{first}",
            ]
            for seq, (_path, duration) in enumerate(window, start=first):
                lines += [f"#EXTINF:{duration:.6f},", f"{STREAM_ID}/{seq:06d}.ts"]
            self._put_playlist(f"live/{CHANNEL}/{name}/index.m3u8", lines)
        self.published = count

    def _put_playlist(self, key: str, lines: list[str]) -> None:
        body = ("\n".join(lines) + "\n").encode()
        self.store.put(
            key, body, content_type="application/vnd.apple.mpegurl", cache_control=PLAYLIST_CC
        )

    def run(self) -> None:
        total = len(next(iter(self.renditions.values())))
        while self.published < total and not self.stop_event.wait(SEGMENT_S):
            self.publish(self.published + 1)


@contextlib.contextmanager
def live_ladder(workdir: Path) -> Iterator[tuple[str, dict[str, tuple[int, int]]]]:
    """Serve the growing live ladder; yields the gateway's base URL and each rung's
    (peak, average) advertised bitrate."""
    store = LocalStore(workdir / "store")
    started = time.monotonic()
    publisher = LivePublisher(store, render_ladder(workdir / "ffmpeg"))
    publisher.prepare()
    logger.info("rendered and stored the ladder in %.1f s", time.monotonic() - started)
    sock = free_socket()
    config = uvicorn.Config(
        create_app(store), log_level="warning", lifespan="on", ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    publisher.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", publisher.bandwidths()
    finally:
        publisher.stop_event.set()
        server.should_exit = True
        thread.join(timeout=10)
        publisher.join(timeout=5)
        sock.close()


def run_check(base_url: str) -> dict[str, object]:
    cmd = [
        "node", str(CHECK_SCRIPT), "--url", f"{base_url}/watch/{CHANNEL}",
        "--throttle-bps", str(THROTTLE_BPS), "--timeout-seconds", "150",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.stdout.strip(), f"no output from abr_check.mjs: {proc.stderr}"
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, json.dumps(result, indent=2)
    return result


@pytest.fixture
def ladder(tmp_path: Path) -> Iterator[tuple[str, dict[str, tuple[int, int]]]]:
    require_tools()
    with live_ladder(tmp_path) as served:
        yield served


def check(result: dict[str, object]) -> None:
    """The assertions, apart from the fixture so a developer can run them on a saved result."""
    assert result["mode"] == "hls.js" and result["abr"] == "onair"
    levels = result["levels"]
    assert isinstance(levels, list) and len(levels) == len(RUNGS)
    bitrates = [int(level["bitrate"]) for level in levels]
    frags = result["fragments"]
    assert isinstance(frags, list)
    by_phase = {
        phase: [f for f in frags if f["phase"] == phase] for phase in ("fast", "slow", "again")
    }
    top = len(bitrates) - 1

    # At full speed it climbs to the top rung.
    assert any(f["level"] == top for f in by_phase["fast"]), by_phase["fast"]

    # At 1 Mb/s: settled on a rung advertised below 1 Mb/s within a few segments (every
    # fragment from the fourth on), and at most one stall.
    slow = by_phase["slow"]
    assert len(slow) >= 8, slow
    assert all(bitrates[f["level"]] < THROTTLE_BPS for f in slow[3:]), slow
    assert result["stallsWhileThrottled"] <= 1, result["stalls"]
    settled = slow[-1]["level"]

    # Back at full speed it climbs above where it settled.
    again = by_phase["again"]
    assert any(f["level"] > settled for f in again), again

    # The stats overlay (opened with ?stats=1) showed the rung, estimate, buffer and latency.
    text = str(result["statsText"])
    assert "onair" in text and "Mb/s" in text and "Buffer" in text and "Latency" in text, text
    stats = result["statsWhileThrottled"]
    assert isinstance(stats, dict)
    assert stats["abr"] == "onair" and 0 < stats["bandwidthBps"] < 1.5 * THROTTLE_BPS, stats

    # ?abr=hlsjs picks hls.js's own controller.
    assert result["hlsjsMode"] == {"abr": "hlsjs", "onairController": False}
    assert result["failedRequests"] == []
    console = result["console"]
    assert isinstance(console, list)
    assert not [line for line in console if line.startswith(("pageerror", "error"))]


def test_player_settles_below_a_throttled_link_and_climbs_back(
    ladder: tuple[str, dict[str, tuple[int, int]]],
) -> None:
    base_url, bandwidths = ladder
    logger.info("advertised (peak, average) bits/s: %s", bandwidths)
    result = run_check(base_url)
    logger.info("abr result: %s", json.dumps(result))
    check(result)
