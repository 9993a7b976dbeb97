"""CPU cost of our GOP transcoder against the ffmpeg CLI on the same ladder.

    python -m bench.transcode [--seconds 20] [--repeat 2] [--breakdown]

One run renders a 1280x720 30 fps test source (2 s GOPs, H.264 + AAC in FLV) with ffmpeg,
then, rung by rung for the rungs the default ladder gives such a source (720p60 → 720p30,
480p30, 360p30, 160p30):

- ours: `GopTranscoder.transcode()` over every GOP, in this process, CPU seconds from
  `time.process_time()` (import and FLV demux excluded: a worker pays them once);
- ffmpeg: one `ffmpeg` per rung from the same FLV, decode + scale + encode with the same
  x264 settings (preset, zerolatency, bitrate/maxrate/bufsize, one IDR per 2 s, no scene
  cut, one thread) and the hls muxer writing 2 s TS segments, audio copied; CPU seconds
  from `getrusage(RUSAGE_CHILDREN)`.

Both sides run alternately, `--repeat` times, and the minimum per rung is kept (the machine
may be shared). It prints the figures per rung, the ratio ours/ffmpeg and the machine.
`--breakdown` also times our decode and scale alone, to show where the time goes.
"""

from __future__ import annotations

import argparse
import logging
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av

from bench.machine import describe
from pipeline.gop import Gop
from pipeline.ladder import DEFAULT_LADDER, Ladder, Rendition
from tests.mediafixtures import gops_from_flv, make_flv
from workers.transcode.encoder import PIX_FMT, SCALER, GopTranscoder

logger = logging.getLogger(__name__)

SOURCE_SIZE = (1280, 720)
SOURCE_FPS = 30
GOP_SECONDS = 2
GOAL_RATIO = 1.15


@dataclass(slots=True)
class Figures:
    cpu_s: float
    size_bytes: int
    segments: int


def ours(rendition: Rendition, gops: list[Gop], preset: str) -> Figures:
    start = time.process_time()
    transcoder = GopTranscoder(rendition, preset=preset, threads=1)
    segments = [transcoder.transcode(gop) for gop in gops]
    cpu = time.process_time() - start
    return Figures(cpu, sum(len(s.data) for s in segments), len(segments))


def ffmpeg_cli(rendition: Rendition, flv: Path, out: Path, preset: str) -> Figures:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    width, height = rendition.output_size(*SOURCE_SIZE)
    step = rendition.frame_step(SOURCE_FPS)
    fps_filter = f",fps={SOURCE_FPS / step:g}" if step > 1 else ""
    bitrate = rendition.bitrate_bps
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(flv),
        "-map", "0:v:0", "-map", "0:a:0?", "-filter_threads", "1",
        "-vf", f"scale={width}:{height}:flags=bicubic{fps_filter}",
        "-c:v", "libx264", "-threads", "1", "-preset", preset, "-tune", "zerolatency",
        "-profile:v", "high", "-pix_fmt", PIX_FMT,
        "-b:v", str(bitrate), "-maxrate", str(bitrate), "-bufsize", str(2 * bitrate),
        "-force_key_frames", f"expr:gte(t,n_forced*{GOP_SECONDS})",
        "-g", "100000", "-sc_threshold", "0",
        "-fps_mode", "passthrough", "-c:a", "copy",
        "-f", "hls", "-hls_time", str(GOP_SECONDS), "-hls_list_size", "0",
        "-hls_segment_filename", str(out / "seg_%03d.ts"), str(out / "index.m3u8"),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    segments = sorted(out.glob("seg_*.ts"))
    return Figures(cpu, sum(p.stat().st_size for p in segments), len(segments))


def breakdown(rendition: Rendition, gops: list[Gop]) -> tuple[float, float]:
    """CPU seconds of decoding every GOP alone, and of decoding + scaling."""
    results: list[float] = []
    for scale in (False, True):
        scaler = av.video.reformatter.VideoReformatter()
        start = time.process_time()
        decoder = av.CodecContext.create("h264", "r")
        decoder.extradata = gops[0].config.avc_config
        decoder.thread_count = 1
        for gop in gops:
            frames = []
            for unit in gop.video:
                packet = av.Packet(unit.payload)
                packet.pts, packet.dts = unit.pts_90k, unit.dts_90k
                frames += decoder.decode(packet)
            frames += decoder.decode(None)
            decoder.flush_buffers()
            if scale:
                width, height = rendition.output_size(frames[0].width, frames[0].height)
                step = rendition.frame_step(gop.config.fps)
                for frame in frames[::step]:
                    scaler.reformat(frame, width, height, PIX_FMT, interpolation=SCALER, threads=1)
        results.append(time.process_time() - start)
    return results[0], results[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transcode", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args(argv)

    print(f"machine: {describe()}")
    ffmpeg_version = subprocess.run(
        ["ffmpeg", "-version"], check=True, capture_output=True, text=True
    ).stdout.splitlines()[0]
    libs = av.library_versions
    print(f"ours: PyAV {av.__version__} (libavcodec {'.'.join(map(str, libs['libavcodec']))})")
    print(f"reference: {ffmpeg_version}")
    with tempfile.TemporaryDirectory(prefix="bench-transcode-") as tmp:
        workdir = Path(tmp)
        flv = make_flv(
            workdir / "src.flv",
            args.seconds,
            size="x".join(map(str, SOURCE_SIZE)),
            fps=SOURCE_FPS,
            gop_seconds=GOP_SECONDS,
        )
        gops = gops_from_flv(flv, "bench")
        rungs = Ladder.parse(DEFAULT_LADDER).for_source(*SOURCE_SIZE, SOURCE_FPS)
        print(
            f"source: {args.seconds:g} s {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} {SOURCE_FPS} fps, "
            f"{len(gops)} GOPs of {GOP_SECONDS} s; preset {args.preset}, tune zerolatency, "
            f"1 thread; best of {args.repeat}"
        )
        best_ours: dict[str, Figures] = {}
        best_ref: dict[str, Figures] = {}
        for _ in range(args.repeat):
            for rung in rungs:
                mine = ours(rung, gops, args.preset)
                ref = ffmpeg_cli(rung, flv, workdir / rung.name, args.preset)
                if rung.name not in best_ours or mine.cpu_s < best_ours[rung.name].cpu_s:
                    best_ours[rung.name] = mine
                if rung.name not in best_ref or ref.cpu_s < best_ref[rung.name].cpu_s:
                    best_ref[rung.name] = ref

    print(f"{'rung':<8} {'ours CPU s':>10} {'ffmpeg CPU s':>12} {'ratio':>6}  "
          f"{'ours kbps':>9} {'ffmpeg kbps':>11}  segments")  # fmt: skip
    for rung in rungs:
        mine, ref = best_ours[rung.name], best_ref[rung.name]
        print(
            f"{rung.label(SOURCE_FPS):<8} {mine.cpu_s:>10.2f} {ref.cpu_s:>12.2f} "
            f"{mine.cpu_s / ref.cpu_s:>6.2f}  {mine.size_bytes * 8 / args.seconds / 1000:>9.0f} "
            f"{ref.size_bytes * 8 / args.seconds / 1000:>11.0f}  {mine.segments}/{ref.segments}"
        )
    total_ours = sum(f.cpu_s for f in best_ours.values())
    total_ref = sum(f.cpu_s for f in best_ref.values())
    ratio = total_ours / total_ref
    verdict = "ok" if ratio <= GOAL_RATIO else "ABOVE GOAL"
    print(f"{'total':<8} {total_ours:>10.2f} {total_ref:>12.2f} {ratio:>6.2f}  "
          f"(goal ≤ {GOAL_RATIO}: {verdict})")  # fmt: skip
    print(f"ratio ours/ffmpeg = {ratio:.3f}")

    if args.breakdown:
        print("where our time goes (CPU s; decode alone, + scale, the rest = encode + mux):")
        for rung in rungs:
            decode, scaled = breakdown(rung, gops)
            full = best_ours[rung.name].cpu_s
            print(
                f"  {rung.label(SOURCE_FPS):<8} decode {decode:.2f}  scale {scaled - decode:.2f}"
                f"  encode+mux {full - scaled:.2f}  (of {full:.2f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
