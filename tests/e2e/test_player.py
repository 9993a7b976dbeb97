"""A real browser watches a real live HLS stream through the gateway.

ffmpeg renders a test pattern into three renditions of MPEG-TS segments; a publisher thread
lays them out in a LocalStore exactly as the packager does (segments under
`streams/<stream_id>/<rendition>/`, sliding-window media playlists and a master under
`live/<channel>/`), adding one segment per segment duration so the player has to follow a
moving live edge; the app runs under uvicorn; headless Chromium (Debian's package, driven by
playwright-core from `tests/e2e/player_check.mjs`) opens `/watch/<channel>`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import socket
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

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHECK_SCRIPT = Path(__file__).with_name("player_check.mjs")
CHROMIUM = Path("/usr/bin/chromium")
CHANNEL = "demo"
STREAM_ID = "demo-e2e-0001"
SEGMENT_S = 1
SECONDS = 16
WINDOW = 6
PLAYLIST_CC = "public, max-age=1"
SEGMENT_CC = "public, max-age=31536000, immutable"
CODECS = "avc1.4d401e,mp4a.40.2"  # Main@3.0 (forced below) + AAC-LC


@dataclass(frozen=True)
class Rung:
    name: str
    width: int
    height: int
    video_kbps: int


RUNGS = (
    Rung("360p30", 640, 360, 700),
    Rung("240p30", 426, 240, 350),
    Rung("144p30", 256, 144, 150),
)


def require_tools() -> None:
    missing = [
        what
        for what, ok in (
            ("ffmpeg", shutil.which("ffmpeg") is not None),
            ("node", shutil.which("node") is not None),
            ("chromium (apt-get install chromium)", CHROMIUM.is_file()),
            ("node_modules (npm ci)", (REPO / "node_modules" / "playwright-core").is_dir()),
            ("hls.js (npm ci)", (REPO / "node_modules" / "hls.js").is_dir()),
        )
        if not ok
    ]
    if missing:
        pytest.fail(f"e2e player test needs: {', '.join(missing)}")


def render_renditions(out: Path) -> dict[str, list[tuple[Path, float]]]:
    """Three aligned renditions, 1 s GOPs, cut into 1 s MPEG-TS segments by ffmpeg's HLS muxer."""
    split = "".join(f"[v{i}]" for i in range(len(RUNGS)))
    scales = ";".join(f"[v{i}]scale={r.width}:{r.height}[o{i}]" for i, r in enumerate(RUNGS))
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(SECONDS),
        "-filter_complex", f"[0:v]split={len(RUNGS)}{split};{scales}",
    ]  # fmt: skip
    for i in range(len(RUNGS)):
        cmd += ["-map", f"[o{i}]", "-map", "1:a"]
    cmd += [
        "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "main", "-level", "3.0",
        "-pix_fmt", "yuv420p", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0",
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
    subprocess.run(cmd, check=True, timeout=120)
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
    assert len(set(counts.values())) == 1 and min(counts.values()) >= 10, counts
    return renditions


class LivePublisher(threading.Thread):
    """Plays the packager's part: store every segment, then grow a sliding-window playlist
    by one segment per segment duration (no ENDLIST: the stream is live)."""

    def __init__(self, store: LocalStore, renditions: dict[str, list[tuple[Path, float]]]):
        super().__init__(name="live-publisher", daemon=True)
        self.store = store
        self.renditions = renditions
        self.stop_event = threading.Event()
        self.published = 0

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
        for rung in RUNGS:
            sizes = [path.stat().st_size * 8 / d for path, d in self.renditions[rung.name]]
            lines.append(
                f"#EXT-X-STREAM-INF:BANDWIDTH={math.ceil(max(sizes))},"
                f"AVERAGE-BANDWIDTH={math.ceil(sum(sizes) / len(sizes))},"
                f"RESOLUTION={rung.width}x{rung.height},FRAME-RATE=30.000,"
                f'CODECS="{CODECS}"'
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


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def gateway_url(tmp_path: Path) -> Iterator[str]:
    require_tools()
    store = LocalStore(tmp_path / "store")
    started = time.monotonic()
    publisher = LivePublisher(store, render_renditions(tmp_path / "ffmpeg"))
    publisher.prepare()
    logger.info("rendered and stored in %.1f s", time.monotonic() - started)

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
    port = sock.getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        publisher.stop_event.set()
        server.should_exit = True
        thread.join(timeout=10)
        publisher.join(timeout=5)
        sock.close()


def test_browser_plays_live_stream_and_lists_qualities(gateway_url: str) -> None:
    cmd = [
        "node", str(CHECK_SCRIPT), "--url", f"{gateway_url}/watch/{CHANNEL}",
        "--min-levels", "2", "--play-seconds", "2", "--timeout-seconds", "30",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert proc.stdout.strip(), f"no output from player_check.mjs: {proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, json.dumps(result, indent=2)
    logger.info("player result: %s", json.dumps(result))

    assert result["pageStatus"] == 200
    assert result["mode"] == "hls.js"
    heights = sorted(level["height"] for level in result["levels"])
    assert heights == sorted(r.height for r in RUNGS)
    assert result["currentTime"] >= result["firstCurrentTime"] + 2

    # The selector lists Auto and every level, highest first, named by height.
    options = result["beforeSwitch"]["options"]
    assert options[0] == {"value": "-1", "text": "Auto"}
    assert [o["text"] for o in options[1:]] == [f"{r.height}p" for r in RUNGS]
    assert result["beforeSwitch"]["currentLevelText"].startswith("Auto (")
    assert result["beforeSwitch"]["liveEdgeHidden"] is False

    # Pinning a level from the selector switched playback to it, and it kept playing.
    after = result["afterSwitch"]
    pinned = result["levels"][result["pinnedLevel"]]
    assert after["currentLevel"] == result["pinnedLevel"]
    assert after["currentLevelText"] == f"{pinned['height']}p"
    assert after["autoLevelEnabled"] is False
    assert result["afterAuto"]["autoLevelEnabled"] is True
    assert result["failedRequests"] == []
    assert not [line for line in result["console"] if line.startswith(("pageerror", "error"))]
