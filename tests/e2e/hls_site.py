"""A live HLS ladder served by the gateway app, for the e2e tests that open it in Chromium.

Owns what test_player.py and test_abr_player.py share: the tool check (ffmpeg, node,
Debian's Chromium, playwright-core and hls.js from `npm ci`), rendering a test pattern into
aligned renditions of MPEG-TS segments with ffmpeg, a publisher thread that lays them out in
a LocalStore as the packager does (segments under `streams/<stream_id>/<rendition>/`,
sliding-window media playlists and a master under `live/<channel>/`) and grows the playlists
by one segment per segment duration, and serving the app under uvicorn on a free port.
test_chat_replay.py uses the tool check.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from gateway.http.app import create_app
from objectstore.local import LocalStore
from tests.served import uvicorn_thread

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PLAYLIST_CC = "public, max-age=1"
SEGMENT_CC = "public, max-age=31536000, immutable"
FPS = 30

Renditions = dict[str, list[tuple[Path, float]]]  # rendition → [(segment file, duration s)]


def require_tools(test: str) -> None:
    """Fail (not skip) the `test` ("player", "chat replay", …) when a tool is missing."""
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
        pytest.fail(f"e2e {test} test needs: {', '.join(missing)}")


@dataclass(frozen=True)
class Rung:
    name: str
    width: int
    height: int
    video_kbps: int


def render_ladder(
    out: Path,
    rungs: tuple[Rung, ...],
    *,
    seconds: int,
    segment_s: int,
    level: str,
    min_segments: int,
    timeout_s: float,
) -> Renditions:
    """Aligned renditions of the first rung's size of test pattern, 30 fps, one GOP per
    `segment_s`, H.264 Main at `level` + AAC-LC, cut into MPEG-TS segments by ffmpeg's HLS
    muxer; asserts every rendition has the same number of segments, at least `min_segments`."""
    split = "".join(f"[v{i}]" for i in range(len(rungs)))
    scales = ";".join(f"[v{i}]scale={r.width}:{r.height}[o{i}]" for i, r in enumerate(rungs))
    gop = str(FPS * segment_s)
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={rungs[0].width}x{rungs[0].height}:rate={FPS}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds),
        "-filter_complex", f"[0:v]split={len(rungs)}{split};{scales}",
    ]  # fmt: skip
    for i in range(len(rungs)):
        cmd += ["-map", f"[o{i}]", "-map", "1:a"]
    cmd += [
        "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "main", "-level", level,
        "-pix_fmt", "yuv420p", "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "64k", "-ac", "2",
    ]  # fmt: skip
    for i, rung in enumerate(rungs):
        cmd += [f"-b:v:{i}", f"{rung.video_kbps}k", f"-maxrate:v:{i}", f"{rung.video_kbps}k"]
        cmd += [f"-bufsize:v:{i}", f"{rung.video_kbps * 2}k"]
    var_stream_map = " ".join(f"v:{i},a:{i},name:{r.name}" for i, r in enumerate(rungs))
    cmd += [
        "-f", "hls", "-hls_time", str(segment_s), "-hls_list_size", "0",
        "-hls_playlist_type", "vod", "-hls_segment_type", "mpegts",
        "-hls_segment_filename", str(out / "%v" / "%06d.ts"),
        "-var_stream_map", var_stream_map,
        str(out / "%v" / "index.m3u8"),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=timeout_s)
    renditions: Renditions = {}
    for rung in rungs:
        segments: list[tuple[Path, float]] = []
        duration = 0.0
        for line in (out / rung.name / "index.m3u8").read_text().splitlines():
            if line.startswith("#EXTINF:"):
                duration = float(line.removeprefix("#EXTINF:").split(",")[0])
            elif line and not line.startswith("#"):
                segments.append((out / rung.name / line, duration))
        renditions[rung.name] = segments
    counts = {name: len(segments) for name, segments in renditions.items()}
    assert len(set(counts.values())) == 1 and min(counts.values()) >= min_segments, counts
    return renditions


@dataclass(frozen=True)
class Ladder:
    """Where and how a LivePublisher lays out its renditions."""

    channel: str
    stream_id: str
    rungs: tuple[Rung, ...]
    codecs: str
    segment_s: int
    window: int
    name_variants: bool = False  # NAME="<rung>" on each variant of the master playlist


class LivePublisher(threading.Thread):
    """Plays the packager's part: store every segment, then grow a sliding-window playlist
    by one segment per segment duration (no ENDLIST: the stream is live), under a master
    playlist advertising each rung's peak (BANDWIDTH) and mean (AVERAGE-BANDWIDTH) segment
    bitrate, as onair's packager does."""

    def __init__(
        self, store: LocalStore, renditions: Renditions, ladder: Ladder, *, name: str
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.store = store
        self.renditions = renditions
        self.ladder = ladder
        self.stop_event = threading.Event()
        self.published = 0

    def bandwidths(self) -> dict[str, tuple[int, int]]:
        out = {}
        for rung in self.ladder.rungs:
            rates = [path.stat().st_size * 8 / d for path, d in self.renditions[rung.name]]
            out[rung.name] = (math.ceil(max(rates)), math.ceil(sum(rates) / len(rates)))
        return out

    def prepare(self) -> None:
        ladder = self.ladder
        for name, segments in self.renditions.items():
            for seq, (path, _duration) in enumerate(segments):
                self.store.put(
                    f"streams/{ladder.stream_id}/{name}/{seq:06d}.ts",
                    path.read_bytes(),
                    content_type="video/mp2t",
                    cache_control=SEGMENT_CC,
                )
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
        bandwidths = self.bandwidths()
        for rung in ladder.rungs:
            peak, average = bandwidths[rung.name]
            named = f',NAME="{rung.name}"' if ladder.name_variants else ""
            lines.append(
                f"#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},"
                f"RESOLUTION={rung.width}x{rung.height},FRAME-RATE=30.000,"
                f'CODECS="{ladder.codecs}"{named}'
            )
            lines.append(f"{rung.name}/index.m3u8")
        self._put_playlist(f"live/{ladder.channel}/master.m3u8", lines)
        self.publish(4)

    def publish(self, count: int) -> None:
        ladder = self.ladder
        first = max(0, count - ladder.window)
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
                lines += [f"#EXTINF:{duration:.6f},", f"{ladder.stream_id}/{seq:06d}.ts"]
            self._put_playlist(f"live/{ladder.channel}/{name}/index.m3u8", lines)
        self.published = count

    def _put_playlist(self, key: str, lines: list[str]) -> None:
        body = ("\n".join(lines) + "\n").encode()
        self.store.put(
            key, body, content_type="application/vnd.apple.mpegurl", cache_control=PLAYLIST_CC
        )

    def run(self) -> None:
        total = len(next(iter(self.renditions.values())))
        while self.published < total and not self.stop_event.wait(self.ladder.segment_s):
            self.publish(self.published + 1)


@contextlib.contextmanager
def serve_live(store: LocalStore, publisher: LivePublisher) -> Iterator[str]:
    """Serve `store` with the gateway app under uvicorn, then start the (prepared)
    publisher; yields the base URL. On exit the publisher and the server are stopped."""
    config = uvicorn.Config(
        create_app(store), log_level="warning", lifespan="on", ws="none", http="h11"
    )
    with uvicorn_thread(config) as port:
        publisher.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            publisher.stop_event.set()
            publisher.join(timeout=5)
