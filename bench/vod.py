"""StreamEnded → VOD complete, and replay (rebuild) speed, each against plain ffmpeg.

    python -m bench.vod [--minutes 1,10] [--speed 20] [--rebuild-seconds 60] [--stores s3,local]
                        [--format cmaf|ts]

Needs the services (`make services`). Two questions:

1. How long after StreamEnded is the VOD complete (catalog record in onair.vods: playlists,
   one MP4 per rendition, poster, thumbnails), for a 1- and a 10-minute stream of the 720p30
   ladder (720p30 4.5 Mb/s, 480p30 1.5, 360p30 0.8, 160p30 0.3, AAC)?
   The stream is synthesized, not transcoded live (a 10-minute live run would cost ten
   minutes and two busy cores): ffmpeg renders the four renditions as 2 s segments once
   (cached in .cache/bench-vod/): CMAF (fMP4 after an init segment, what live workers write
   and the VOD reads) or, `--format ts`, MPEG-TS (a stream recorded without CMAF). The bench
   then plays the transcode workers' part — each segment is written to the store under
   `streams/<id>/<r>/NNNNNN.m4s` (and the init segment once) or `NNNNNN.ts` and announced
   with a SegmentReady, paced at `--speed` x real time, between a StreamStarted and end
   markers + StreamEnded — while the real `onair vod` worker runs as its own process. At
   20x the worker's live prefetch keeps up, so the figure is what a real-time stream gets;
   the "cold" row is a worker that saw none of the stream (restarted after it ended, or
   `--no-prefetch`) and reads every segment from the store at the end. Timed from the
   StreamEnded delivery to the Vod record read back from onair.vods.
   Reference: ffmpeg remuxing the same segments from local files to faststart MP4s
   (`cat [init.mp4] *.m4s|*.ts | ffmpeg -c copy -movflags +faststart`), the least work an MP4
   VOD needs.

2. How fast does `onair vod rebuild` re-run a stream from onair.ingest.gops? A 720p30 test
   pattern (3 Mb/s H.264 with B-frames, AAC) is cut into GOPs exactly as ingest would and
   produced to onair.ingest.gops with its StreamStarted/StreamEnded; the rebuild transcodes
   it into the 720p30 ladder with one process per core. Reference: one ffmpeg process
   encoding the same file into the same ladder (split + scale, x264 veryfast, same bitrates,
   its own threading). Speed = media seconds / wall seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.machine import describe
from objectstore import open_store
from pipeline.channels import new_stream_id
from pipeline.keys import cmaf_key, cmaf_segment_name, segment_key
from pipeline.ladder import DEFAULT_LADDER, Ladder
from pipeline.store import ObjectStore
from schemas.codec import Codec
from schemas.records import end_of_stream_record, gop_to_record
from tests.harness import ROOT, Platform
from tests.mediafixtures import cached_flv, gops_from_flv
from topics.client import CheckedProducer
from topics.specs import GOPS, SEGMENTS, STREAMS, VODS
from topics.table import TableReader
from workers.rebuild.output import StoreSpec
from workers.rebuild.replay import rebuild
from workers.transcode.core import SEGMENT_CACHE_CONTROL

CACHE = ROOT / ".cache" / "bench-vod"
BOOTSTRAP = os.environ.get("ONAIR_KAFKA_BOOTSTRAP", "localhost:9092")
SOURCE = (1280, 720, 30.0)
SEGMENT_S = 2


def ladder_rungs() -> list[tuple[str, int, int, int]]:
    """(label, width, height, kbps) of the default ladder for a 720p30 source."""
    width, height, fps = SOURCE
    rungs = Ladder.parse(DEFAULT_LADDER).for_source(int(width), int(height), fps)
    return [
        (r.label(fps), *r.output_size(int(width), int(height)), r.bitrate_bps // 1000)
        for r in rungs
    ]


# ---- part 1: StreamEnded → VOD -------------------------------------------------------------


def render(seconds: int, fmt: str = "cmaf") -> Path:
    """The four renditions as HLS segments (CMAF or MPEG-TS), rendered once per length."""
    out = CACHE / f"renditions-{seconds}s" if fmt == "ts" else CACHE / f"renditions-{seconds}s-cmaf"
    if (out / "done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    rungs = ladder_rungs()
    split = "".join(f"[v{i}]" for i in range(len(rungs)))
    graph = f"[0:v]split={len(rungs)}{split};" + ";".join(
        f"[v{i}]scale={w}:{h}[o{i}]" for i, (_, w, h, _) in enumerate(rungs)
    )
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-filter_complex", graph,
    ]  # fmt: skip
    for i, (label, _, _, kbps) in enumerate(rungs):
        (out / label).mkdir(parents=True, exist_ok=True)
        segments = ["-hls_segment_filename", str(out / label / "%06d.ts")]
        if fmt == "cmaf":
            segments = [
                "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
                "-hls_segment_filename", str(out / label / "%06d.m4s"),
            ]  # fmt: skip
        command += [
            "-map", f"[o{i}]", "-map", "1:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k",
            "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
            "-c:a", "aac", "-b:a", "96k",
            "-f", "hls", "-hls_time", str(SEGMENT_S), "-hls_list_size", "0",
            *segments, str(out / label / "index.m3u8"),
        ]  # fmt: skip
    print(f"rendering {seconds} s of the ladder into {out} (once)...", flush=True)
    subprocess.run(command, check=True)
    (out / "done").write_text("ok\n")
    return out


def durations(playlist: Path) -> list[int]:
    return [
        round(float(line.split(":")[1].rstrip(",")) * 90_000)
        for line in playlist.read_text().splitlines()
        if line.startswith("#EXTINF:")
    ]


@dataclass
class VodRun:
    store: str
    minutes: float
    prefetch: bool
    ended_to_vod_s: float
    build_s: float
    emit_s: float
    status: str
    duration_s: float


def play_stream(
    rendered: Path, store: ObjectStore, channel: str, speed: float, codec: Codec
) -> tuple[str, float, float]:
    """Be ingest and the transcode workers for one stream; returns (stream id, the time
    StreamEnded was acknowledged, seconds spent emitting)."""
    rungs = ladder_rungs()
    labels = [r[0] for r in rungs]
    lengths = {label: durations(rendered / label / "index.m3u8") for label in labels}
    count = min(len(v) for v in lengths.values())
    now = int(time.time() * 1000)
    stream_id = new_stream_id(channel, now)
    producer = CheckedProducer(BOOTSTRAP)
    started = {
        "stream_id": stream_id, "channel": channel, "started_ms": now, "width": 1280,
        "height": 720, "fps": 30.0, "renditions": labels, "gops_partition": -1,
        "gops_first_offset": -1,
    }  # fmt: skip
    producer.send(STREAMS, channel, codec.encode("StreamStarted", started))
    emit_start = time.monotonic()
    pts = {label: 126_000 for label in labels}
    cmaf = (rendered / labels[0] / "init.mp4").exists()
    inits = {}
    for label in labels if cmaf else []:  # as the workers do: the init before any segment
        init = (rendered / label / "init.mp4").read_bytes()
        name = f"init-{hashlib.sha256(init).hexdigest()[:16]}.mp4"
        inits[label] = cmaf_key(stream_id, label, name)
        store.put(inits[label], init, content_type="video/mp4", cache_control=SEGMENT_CACHE_CONTROL)
    for index in range(count):
        due = emit_start + index * SEGMENT_S / speed
        time.sleep(max(0.0, due - time.monotonic()))
        for label, width, height, _kbps in rungs:
            if cmaf:  # as with ONAIR_TS_SEGMENTS=0: the CMAF segment is the segment
                body = (rendered / label / f"{index:06d}.m4s").read_bytes()
                key = cmaf_key(stream_id, label, cmaf_segment_name(index))
                kind = "video/iso.segment"
            else:
                body = (rendered / label / f"{index:06d}.ts").read_bytes()
                key, kind = segment_key(stream_id, label, index), "video/mp2t"
            store.put(key, body, content_type=kind, cache_control=SEGMENT_CACHE_CONTROL)
            duration = lengths[label][index]
            event = {
                "stream_id": stream_id, "channel": channel, "rendition": label,
                "sequence": index, "key": key, "start_pts_90k": pts[label],
                "duration_90k": duration, "size_bytes": len(body),
                "bitrate_bps": len(body) * 8 * 90_000 // duration, "width": width,
                "height": height, "fps": 30.0, "codecs": "avc1.42c01f,mp4a.40.2",
                "discontinuity": False, "program_date_time_ms": now + index * 2000,
                "ingest_time_ms": now + index * 2000, "renditions": labels,
                "end_of_stream": False, "cmaf_key": key if cmaf else "",
                "init_key": inits.get(label, ""),
            }  # fmt: skip
            pts[label] += duration
            producer.produce(SEGMENTS, stream_id, codec.encode("SegmentReady", event))
        producer.flush()
    for label in labels:
        marker = {
            "stream_id": stream_id, "channel": channel, "rendition": label, "sequence": count,
            "key": "", "start_pts_90k": 0, "duration_90k": 0, "size_bytes": 0,
            "bitrate_bps": 0, "width": 0, "height": 0, "fps": 0.0, "codecs": "",
            "program_date_time_ms": 0, "ingest_time_ms": 0, "renditions": labels,
            "end_of_stream": True,
        }  # fmt: skip
        producer.produce(SEGMENTS, stream_id, codec.encode("SegmentReady", marker))
    producer.flush()
    emit_s = time.monotonic() - emit_start
    ended = {
        "stream_id": stream_id, "channel": channel, "ended_ms": int(time.time() * 1000),
        "reason": "bench", "last_sequence": count - 1, "gops_partition": -1,
        "gops_last_offset": -1,
    }  # fmt: skip
    producer.send(STREAMS, channel, codec.encode("StreamEnded", ended))
    return stream_id, time.monotonic(), emit_s


def run_vod(
    work: Path, store_kind: str, minutes: float, prefetch: bool, speed: float, fmt: str
) -> VodRun:
    rendered = render(round(minutes * 60), fmt)
    env = {"ONAIR_STORAGE_URL": str(work / "store")} if store_kind == "local" else {}
    platform = Platform(work, **env)
    settings_env = platform.env
    store = open_store(
        settings_env["ONAIR_STORAGE_URL"],
        **(
            {
                "endpoint_url": settings_env["ONAIR_S3_ENDPOINT"],
                "access_key": settings_env["ONAIR_S3_ACCESS_KEY"],
                "secret_key": settings_env["ONAIR_S3_SECRET_KEY"],
            }
            if store_kind == "s3"
            else {}
        ),
    )
    codec = Codec()
    vods = TableReader(BOOTSTRAP, VODS, "Vod")
    vods.start()
    try:
        platform.start("vod", "vod", *([] if prefetch else ["--no-prefetch"]))
        platform.wait_ready("vod")
        channel = f"bench_vod_{uuid.uuid4().hex[:6]}"
        stream_id, ended_at, emit_s = play_stream(rendered, store, channel, speed, codec)
        if not vods.wait_for(lambda d: stream_id in d, 300):
            raise TimeoutError(f"no VOD after 300 s:\n{platform.log_tail('vod')}")
        seen = time.monotonic()
        vod = vods.get(stream_id)
        assert vod is not None
    finally:
        vods.stop()
        platform.stop()
    if store_kind == "s3":  # hundreds of MB per run: leave the shared server as it was
        for key in [*store.list(f"streams/{stream_id}/"), *store.list(f"vod/{stream_id}/")]:
            store.delete(key)
    return VodRun(
        store_kind,
        minutes,
        prefetch,
        seen - ended_at,
        (vod["completed_ms"] - vod["ended_ms"]) / 1000,
        emit_s,
        vod["status"],
        vod["duration_ms"] / 1000,
    )


def reference_remux(minutes: float, work: Path, fmt: str) -> float:
    """ffmpeg alone: the segments already on local disk → four faststart MP4s."""
    rendered = render(round(minutes * 60), fmt)
    started = time.monotonic()
    for label, *_ in ladder_rungs():
        files = sorted((rendered / label).glob("*.ts" if fmt == "ts" else "*.m4s"))
        if fmt == "cmaf":
            files.insert(0, rendered / label / "init.mp4")
        ffmpeg = subprocess.Popen(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-f",
                "mpegts" if fmt == "ts" else "mp4",
                "-i",
                "pipe:0",
                "-c",
                "copy",
                "-movflags",
                "+faststart",
                str(work / f"{label}.mp4"),
            ],
            stdin=subprocess.PIPE,
        )
        assert ffmpeg.stdin is not None
        for path in files:
            ffmpeg.stdin.write(path.read_bytes())
        ffmpeg.stdin.close()
        if ffmpeg.wait() != 0:
            raise RuntimeError("reference remux failed")
    return time.monotonic() - started


# ---- part 2: rebuild ---------------------------------------------------------------------


def produce_gops(seconds: int, codec: Codec) -> tuple[str, float]:
    """A stream's GOP chunks and lifecycle as ingest would write them; (stream id, media s)."""
    flv = cached_flv(CACHE, seconds=seconds)
    channel = f"bench_rebuild_{uuid.uuid4().hex[:6]}"
    now = int(time.time() * 1000)
    stream_id = new_stream_id(channel, now)
    gops = gops_from_flv(flv, stream_id)
    producer = CheckedProducer(BOOTSTRAP)
    deliveries = []
    for gop in gops:
        record = gop_to_record(gop, channel=channel, ingest_time_ms=now)
        deliveries.append(producer.send(GOPS, stream_id, codec.encode("GopChunk", record)))
    marker = end_of_stream_record(stream_id, channel, len(gops), gops[0].config, now)
    end = producer.send(GOPS, stream_id, codec.encode("GopChunk", marker))
    started = {
        "stream_id": stream_id, "channel": channel, "started_ms": now, "width": 1280,
        "height": 720, "fps": 30.0, "renditions": [r[0] for r in ladder_rungs()],
        "gops_partition": deliveries[0].partition, "gops_first_offset": deliveries[0].offset,
    }  # fmt: skip
    ended = {
        "stream_id": stream_id, "channel": channel, "ended_ms": now, "reason": "bench",
        "last_sequence": len(gops) - 1, "gops_partition": end.partition,
        "gops_last_offset": end.offset,
    }  # fmt: skip
    producer.send(STREAMS, channel, codec.encode("StreamStarted", started))
    producer.send(STREAMS, channel, codec.encode("StreamEnded", ended))
    return stream_id, sum(g.duration_90k for g in gops) / 90_000


def reference_transcode(seconds: int, work: Path) -> float:
    flv = cached_flv(CACHE, seconds=seconds)
    rungs = ladder_rungs()
    split = "".join(f"[v{i}]" for i in range(len(rungs)))
    graph = f"[0:v]split={len(rungs)}{split};" + ";".join(
        f"[v{i}]scale={w}:{h}[o{i}]" for i, (_, w, h, _) in enumerate(rungs)
    )
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(flv)]
    command += ["-filter_complex", graph]
    for i, (label, _, _, kbps) in enumerate(rungs):
        command += [
            "-map", f"[o{i}]", "-map", "0:a", "-c:v", "libx264", "-preset", "veryfast",
            "-tune", "zerolatency", "-profile:v", "high", "-b:v", f"{kbps}k",
            "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k",
            "-force_key_frames", "expr:gte(t,n_forced*2)", "-c:a", "copy",
            "-f", "hls", "-hls_time", "2", "-hls_list_size", "0",
            "-hls_segment_filename", str(work / f"{label}-%05d.ts"), str(work / f"{label}.m3u8"),
        ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(command, check=True)
    return time.monotonic() - started


# ---- report ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", default="1,10", help="stream lengths, comma-separated")
    parser.add_argument("--speed", type=float, default=20.0, help="x real time the stream plays")
    parser.add_argument("--stores", default="s3,local")
    parser.add_argument("--rebuild-seconds", type=int, default=60)
    parser.add_argument("--skip-vod", action="store_true")
    parser.add_argument("--skip-rebuild", action="store_true")
    parser.add_argument("--format", choices=["cmaf", "ts"], default="cmaf", help="segments")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "onair.cli", "topics"],
        cwd=ROOT,
        check=False,
        capture_output=True,
    )
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="onair-bench-vod-") as tmp:
        work = Path(tmp)
        if not args.skip_vod:
            lines += bench_vods(work, args)
        if not args.skip_rebuild:
            lines += bench_rebuild(work, args.rebuild_seconds)
    print()
    print("\n".join(lines))
    print(f"machine: {describe()}")


def bench_vods(work: Path, args: argparse.Namespace) -> list[str]:
    minutes = [float(m) for m in args.minutes.split(",") if m]
    stores = [s for s in args.stores.split(",") if s]
    runs: list[VodRun] = []
    for store in stores:
        for length in minutes:
            runs.append(
                run_vod(work / f"{store}-{length}", store, length, True, args.speed, args.format)
            )
            print(runs[-1], flush=True)
        runs.append(
            run_vod(work / f"{store}-cold", store, max(minutes), False, args.speed, args.format)
        )
        print(runs[-1], flush=True)
    references = {m: reference_remux(m, work, args.format) for m in minutes}
    rungs = ", ".join(f"{label} {kbps / 1000:g} Mb/s" for label, _, _, kbps in ladder_rungs())
    out = [
        f"bench.vod: StreamEnded → VOD complete (catalog record), ladder {rungs}, AAC;",
        f"  {args.format} segments synthesized by ffmpeg, published at {args.speed:g}x real time",
        f"  {'store':<6} {'stream':>7} {'live prefetch':<14} {'ended→VOD':>10} "
        f"{'worker':>8} {'ffmpeg remux only':>18} {'ratio':>6}  status",
    ]
    for run in runs:
        reference = references[run.minutes]
        out.append(
            f"  {run.store:<6} {run.minutes:>5g} m {'yes' if run.prefetch else 'no (cold)':<14} "
            f"{run.ended_to_vod_s:>8.2f} s {run.build_s:>6.2f} s {reference:>16.2f} s "
            f"{run.ended_to_vod_s / reference:>6.2f}  {run.status}, {run.duration_s:.0f} s"
        )
    return out


def bench_rebuild(work: Path, seconds: int) -> list[str]:
    codec = Codec()
    stream_id, media_s = produce_gops(seconds, codec)
    processes = os.cpu_count() or 1
    result = rebuild(
        BOOTSTRAP,
        stream_id,
        StoreSpec(str(work / "rebuild")),
        ladder=Ladder.parse(DEFAULT_LADDER),
        workers=processes,
    )
    (work / "reference").mkdir(exist_ok=True)
    reference_s = reference_transcode(seconds, work / "reference")
    reference_speed = media_s / reference_s
    return [
        f"bench.vod rebuild: {media_s:.0f} s of 720p30 (3 Mb/s, B-frames) from "
        f"{GOPS} → {', '.join(result.renditions)}",
        f"  onair vod rebuild, {processes} processes: {result.wall_s:6.2f} s = "
        f"{result.speed:5.2f}x real time ({result.segments} GOPs)",
        f"  ffmpeg, one process, same ladder:   {reference_s:6.2f} s = {reference_speed:5.2f}x "
        f"real time",
        f"  ratio onair/ffmpeg speed: {result.speed / reference_speed:.2f}",
    ]


if __name__ == "__main__":
    main()
