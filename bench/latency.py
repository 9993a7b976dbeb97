"""Glass-to-playlist latency of the live pipeline, against a single ffmpeg doing the same ladder.

    python -m bench.latency [--seconds 60]

Needs the services (`make services`). One run:

- onair: every role as its own process (ingest, packager, HTTP, one transcode worker per rung)
  on the real Kafka, local-directory store. Real ffmpeg publishes a 720p30 test pattern with a
  tone, 2 s GOPs, in real time (-re). For every GOP: from the moment ingest closed it (its
  `ingest_time_ms`: the next keyframe arrived, so its last packet was in) to the moment its
  segment is listed in *every* rendition's media playlist (the store is polled every 20 ms).
- reference: one `ffmpeg -listen 1` process receives the same push and encodes the same
  ladder with the same x264 settings, writing HLS with its own muxer; the same polling.
  Both are also measured on the publisher's clock (GOP N complete at start + 2·(N+1) s), the
  only clock the reference has.

Prints p50/p99 for both, the ratio, and the machine. Goal (issue): onair p50 < 1 s, p99 < 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.machine import describe
from pipeline.ladder import DEFAULT_LADDER, Ladder
from tests.harness import Platform, free_port, parse_media_playlist, records_since, wait_port
from topics.specs import GOPS

GOP_S = 2.0
RENDITIONS = ["720p30", "480p30", "360p30", "160p30"]


class PlaylistWatcher(threading.Thread):
    """Polls media playlists on disk; remembers when each segment index first appeared."""

    def __init__(self, paths: dict[str, Path], interval_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.interval_s = interval_s
        self.first_seen: dict[str, dict[int, float]] = {r: {} for r in paths}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            for rendition, path in self.paths.items():
                try:
                    text = path.read_text()
                except OSError:
                    continue
                info = parse_media_playlist(text)
                first = info["media_sequence"] or 0
                seen = self.first_seen[rendition]
                for offset, _segment in enumerate(info["segments"]):
                    seen.setdefault(first + offset, now)
            self.stop.wait(self.interval_s)

    def listed_everywhere(self) -> dict[int, float]:
        common = set.intersection(*(set(s) for s in self.first_seen.values()))
        return {n: max(self.first_seen[r][n] for r in self.first_seen) for n in common}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, latencies: list[float]) -> str:
    return (
        f"{name:<34} n={len(latencies):<3} p50 {percentile(latencies, 0.5):6.3f} s  "
        f"p99 {percentile(latencies, 0.99):6.3f} s  mean {statistics.fmean(latencies):6.3f} s"
    )


def run_onair(work: Path, seconds: float) -> tuple[list[float], list[float]]:
    store = work / "store"
    platform = Platform(work, ONAIR_STORAGE_URL=str(store), ONAIR_PLAYLIST_WINDOW="100")
    platform.cli("topics")
    try:
        platform.start("ingest", "ingest")
        platform.start("package", "package")
        rungs = Ladder.parse(DEFAULT_LADDER).for_source(1280, 720, 30.0)
        for rung in rungs:
            platform.start(f"transcode-{rung.name}", "transcode", "--rendition", rung.name)
        wait_port(platform.rtmp_port)
        platform.wait_ready("packager", *(f"transcode.{r.name}" for r in rungs))
        # warm up: a short stream on another channel, until its playlist appears
        warm = f"warm_{uuid.uuid4().hex[:6]}"
        platform.publish(platform.create_channel(warm)["stream_key"], 4, realtime=False).wait()
        deadline = time.monotonic() + 90
        while not (store / f"live/{warm}/160p30/index.m3u8").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the pipeline did not produce the warm-up playlist")
            time.sleep(0.2)

        channel = f"bench_{uuid.uuid4().hex[:6]}"
        key = platform.create_channel(channel)["stream_key"]
        watcher = PlaylistWatcher({r: store / f"live/{channel}/{r}/index.m3u8" for r in RENDITIONS})
        watcher.start()
        started = time.time()
        publisher = platform.publish(key, seconds)
        publisher.wait()
        time.sleep(8)
        watcher.stop.set()
        listed = watcher.listed_everywhere()
        closed = gop_close_times(
            platform.env.get("ONAIR_KAFKA_BOOTSTRAP", "localhost:9092"),
            channel,
        )
    finally:
        platform.stop()
    if not listed or not closed:
        raise RuntimeError(
            f"nothing measured: {len(listed)} listed, {len(closed)} GOPs; logs in {platform.logs}"
        )
    by_ingest = [listed[n] - closed[n] for n in listed if n in closed]
    by_publisher = [listed[n] - (started + GOP_S * (n + 1)) for n in listed]
    return by_ingest, by_publisher


def gop_close_times(bootstrap: str, channel: str) -> dict[int, float]:
    """sequence → when ingest closed the GOP, from the chunks themselves."""
    return {
        record["sequence"]: record["ingest_time_ms"] / 1000
        for name, record in records_since(bootstrap, GOPS, time.time() - 600)
        if name == "GopChunk"
        and record["channel"] == channel
        and record["last_part"]
        and not record["end_of_stream"]
    }


def run_reference(work: Path, seconds: float) -> list[float]:
    port = free_port()
    out = work / "ffmpeg-hls"
    for index in range(len(RENDITIONS)):
        (out / str(index)).mkdir(parents=True, exist_ok=True)
    ladder = Ladder.parse(DEFAULT_LADDER)
    rungs = ladder.for_source(1280, 720, 30.0)
    split = "".join(f"[v{i}]" for i in range(len(rungs)))
    graph = f"[0:v]split={len(rungs)}{split};" + ";".join(
        f"[v{i}]scale={r.output_size(1280, 720)[0]}:{r.output_size(1280, 720)[1]}[o{i}]"
        for i, r in enumerate(rungs)
    )
    args = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-listen",
        "1",
        "-i",
        f"rtmp://127.0.0.1:{port}/live/ref",
        "-filter_complex",
        graph,
    ]
    for i, rung in enumerate(rungs):
        args += ["-map", f"[o{i}]", "-map", "0:a"]
        kbps = rung.bitrate_bps // 1000
        args += [
            f"-b:v:{i}",
            f"{kbps}k",
            f"-maxrate:v:{i}",
            f"{kbps}k",
            f"-bufsize:v:{i}",
            f"{2 * kbps}k",
        ]
    args += [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-threads",
        "1",
        "-g",
        "60",
        "-keyint_min",
        "60",
        "-sc_threshold",
        "0",
        "-force_key_frames",
        "expr:gte(t,n_forced*2)",
        "-c:a",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_list_size",
        "100",
        "-var_stream_map",
        " ".join(f"v:{i},a:{i}" for i in range(len(rungs))),
        "-hls_segment_filename",
        f"{out}/%v/seg%05d.ts",
        f"{out}/%v/index.m3u8",
    ]
    server = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    time.sleep(1.5)  # `-listen 1` takes exactly one client: no port probe before the push
    watcher = PlaylistWatcher({str(i): out / str(i) / "index.m3u8" for i in range(len(rungs))})
    watcher.start()
    platform = Platform(work / "ref")
    platform.rtmp_port = port
    started = time.time()
    publisher = platform.publish("ref", seconds)
    publisher.wait()
    server.wait(60)
    time.sleep(1)
    watcher.stop.set()
    listed = watcher.listed_everywhere()
    if len(listed) < 2:
        raise RuntimeError(
            f"the reference listed {len(listed)} segments (exit {server.returncode})"
        )
    # ffmpeg lists the last, shorter segment only at the end: leave it out
    return [listed[n] - (started + GOP_S * (n + 1)) for n in sorted(listed)[:-1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onair-bench-") as tmp:
        work = Path(tmp)
        by_ingest, by_publisher = run_onair(work / "onair", args.seconds)
        reference = run_reference(work, args.seconds)
    print(f"bench.latency: {args.seconds:.0f} s of 720p30, 2 s GOPs, ladder {RENDITIONS}")
    print(summary("onair (ingest close → all listed)", by_ingest))
    print(summary("onair (publisher clock)", by_publisher))
    print(summary("ffmpeg one-process (publisher clock)", reference))
    ratio = percentile(by_publisher, 0.5) / percentile(reference, 0.5)
    print(f"ratio onair/ffmpeg p50 (publisher clock): {ratio:.2f}")
    print(f"machine: {describe()}")


if __name__ == "__main__":
    main()
