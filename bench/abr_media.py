"""The media the ABR simulator streams: per rung, per segment, per part, the bytes that an
actual onair encode of a test clip produced.

    python -m bench.abr_media        # encode (once) and print the table

A 1080p60 clip (four 12 s scenes of different difficulty: a plain test pattern, the same
with film grain, Conway's life upscaled, moving gradients with grain; a 440 Hz tone as AAC)
is rendered with ffmpeg into FLV with 2 s GOPs, cut into `Gop`s exactly as the RTMP gateway
does (`tests.mediafixtures.gops_from_flv`), and every GOP goes through onair's own
`GopTranscoder` (workers/transcode/encoder.py: decode, scale, x264 with the ladder's
bitrate, VBV and preset, MPEG-TS mux with the AAC copied) for every rung of the default
ladder, cutting CMAF parts of 0.5 s as it encodes, as a worker does for LL-HLS. Segment sizes
are the MPEG-TS objects a classic player fetches; part sizes are the CMAF parts (`moof` +
`mdat`, video and the copied AAC) an LL-HLS player fetches — fMP4 carries the same media in
fewer bytes than MPEG-TS (no 188-byte packets, no PES headers per frame), which matters most
on the lowest rung.

The result is cached as JSON in `.cache/bench-abr/` keyed by the ladder and the clip
parameters, so only the first run pays for the encode (a few minutes on two cores).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.gop import Gop
from pipeline.ladder import DEFAULT_LADDER, Ladder, Rendition
from pipeline.timebase import CLOCK_90K
from tests.mediafixtures import gops_from_flv
from workers.transcode.encoder import GopTranscoder

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench-abr"
SEGMENT_S = 2.0
PART_S = 0.5
SCENE_S = 12
FPS = 60
SCENES = (
    "testsrc2=size=960x540:rate={fps}",
    "testsrc2=size=960x540:rate={fps},noise=alls=14:allf=t",
    "life=size=480x270:rate={fps}:mold=10:ratio=0.5,scale=960:540:flags=neighbor",
    "gradients=size=960x540:rate={fps}:speed=0.03,noise=alls=8:allf=t",
)
MEDIA_VERSION = 2  # bump when the clip or the way sizes are measured changes


@dataclass(frozen=True, slots=True)
class Rung:
    """One rung as the simulator sees it: what the ladder promises (nominal), what the
    master playlist advertises (peak and average of the measured segments, as the
    packager's BandwidthMeter does) and the bytes of every segment and part."""

    name: str
    nominal_bps: int
    peak_bps: int
    average_bps: int
    segment_bytes: tuple[int, ...]
    part_bytes: tuple[tuple[int, ...], ...]  # per segment, its parts


@dataclass(frozen=True, slots=True)
class Media:
    """The clip's ladder, lowest rung first; segment n of a session is clip segment
    n mod `segments`."""

    rungs: tuple[Rung, ...]
    segment_s: float
    part_s: float
    source: str

    @property
    def segments(self) -> int:
        return len(self.rungs[0].segment_bytes)

    def chunk_bytes(self, rung: int, index: int, parts: bool) -> int:
        """Bytes of chunk `index` (a segment, or a part when `parts`) of `rung`."""
        if not parts:
            return self.rungs[rung].segment_bytes[index % self.segments]
        per = round(self.segment_s / self.part_s)
        segment, part = divmod(index, per)
        return self.rungs[rung].part_bytes[segment % self.segments][part]

    def to_json(self) -> dict[str, object]:
        return {
            "version": MEDIA_VERSION,
            "segment_s": self.segment_s,
            "part_s": self.part_s,
            "source": self.source,
            "rungs": [
                {
                    "name": r.name,
                    "nominal_bps": r.nominal_bps,
                    "peak_bps": r.peak_bps,
                    "average_bps": r.average_bps,
                    "segment_bytes": list(r.segment_bytes),
                    "part_bytes": [list(p) for p in r.part_bytes],
                }
                for r in self.rungs
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Media:
        rungs = data["rungs"]
        assert isinstance(rungs, list)
        return cls(
            rungs=tuple(
                Rung(
                    name=str(r["name"]),
                    nominal_bps=int(r["nominal_bps"]),
                    peak_bps=int(r["peak_bps"]),
                    average_bps=int(r["average_bps"]),
                    segment_bytes=tuple(int(b) for b in r["segment_bytes"]),
                    part_bytes=tuple(tuple(int(b) for b in p) for p in r["part_bytes"]),
                )
                for r in rungs
            ),
            segment_s=float(str(data["segment_s"])),
            part_s=float(str(data["part_s"])),
            source=str(data["source"]),
        )


def source_description() -> str:
    return (
        f"{len(SCENES) * SCENE_S} s 1920x1080 {FPS} fps clip, {len(SCENES)} scenes "
        "(test pattern; with grain; life; gradients with grain), H.264 10 Mb/s + AAC, "
        "2 s GOPs, transcoded by onair's GopTranscoder"
    )


def render_clip(path: Path) -> Path:
    """The source an OBS user would push: H.264 High 1080p60 at 10 Mb/s, 2 s GOPs, AAC."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    for scene in SCENES:
        cmd += ["-f", "lavfi", "-t", str(SCENE_S), "-i", scene.format(fps=FPS)]
    seconds = len(SCENES) * SCENE_S
    cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    inputs = "".join(f"[{i}:v]" for i in range(len(SCENES)))
    gop = round(FPS * SEGMENT_S)
    cmd += [
        "-filter_complex",
        f"{inputs}concat=n={len(SCENES)}:v=1:a=0,scale=1920:1080:flags=bicubic,format=yuv420p[v]",
        "-map", "[v]", "-map", f"{len(SCENES)}:a",
        "-c:v", "libx264", "-preset", "veryfast", "-b:v", "10M", "-maxrate", "12M",
        "-bufsize", "20M", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "96k", "-ac", "2", "-f", "flv", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def as_parts(sizes: list[int], per: int) -> tuple[int, ...]:
    """A GOP's CMAF part sizes as `per` parts: the simulator's grid is exact (0.5 s), the
    encoder's cut follows frames, so a GOP that came out with another count has its bytes
    dealt out evenly (the rounding left on the last part)."""
    if len(sizes) == per:
        return tuple(sizes)
    total = sum(sizes)
    cut = [total // per] * (per - 1)
    return (*cut, total - sum(cut))


def encode(ladder: Ladder, workdir: Path) -> Media:
    workdir.mkdir(parents=True, exist_ok=True)
    flv = workdir / "clip.flv"
    if not flv.exists():
        started = time.monotonic()
        render_clip(flv.with_suffix(".tmp.flv")).rename(flv)
        logger.info("rendered the clip in %.0f s", time.monotonic() - started)
    gops = [g for g in gops_from_flv(flv, "bench-abr") if g.duration_90k >= CLOCK_90K]
    per = round(SEGMENT_S / PART_S)
    rungs: list[Rung] = []
    for rendition in sorted(ladder.rungs, key=lambda r: r.bitrate_bps):
        rungs.append(encode_rung(rendition, gops, per))
    return Media(tuple(rungs), SEGMENT_S, PART_S, source_description())


def encode_rung(rendition: Rendition, gops: list[Gop], per: int) -> Rung:
    started = time.monotonic()
    transcoder = GopTranscoder(rendition, threads=2 if rendition.height >= 720 else 1)
    sizes: list[int] = []
    parts: list[tuple[int, ...]] = []
    bitrates: list[float] = []
    for gop in gops:
        encoding = transcoder.begin(gop, part_target_90k=round(PART_S * CLOCK_90K))
        encoding.feed(gop.units)
        segment = encoding.finish(gop.duration_90k)
        sizes.append(len(segment.data))
        bitrates.append(len(segment.data) * 8 * CLOCK_90K / gop.duration_90k)
        parts.append(as_parts([len(part.data) for part in encoding.last_parts], per))
    logger.info("encoded %s in %.0f s", rendition.name, time.monotonic() - started)
    return Rung(
        name=rendition.name,
        nominal_bps=rendition.bitrate_bps,
        peak_bps=round(max(bitrates)),
        average_bps=round(sum(bitrates) / len(bitrates)),
        segment_bytes=tuple(sizes),
        part_bytes=tuple(parts),
    )


def load_media(ladder_spec: str = DEFAULT_LADDER, cache: Path = CACHE) -> Media:
    """The cached media for `ladder_spec`, encoding it first if it is not there yet."""
    ladder = Ladder.parse(ladder_spec)
    key = f"v{MEDIA_VERSION}-{ladder_spec.replace(':', '_').replace(',', '-')}"
    path = cache / f"media-{key}.json"
    if path.exists():
        return Media.from_json(json.loads(path.read_text()))
    logger.info("encoding the test clip into %s (once; cached in %s)", ladder_spec, cache)
    media = encode(ladder, cache / "work")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(media.to_json()))
    tmp.rename(path)
    return media


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    media = load_media()
    print(media.source)
    print(f"{'rung':<8} {'nominal':>8} {'average':>8} {'peak':>8}  kbps; segments {media.segments}")
    for r in media.rungs:
        print(
            f"{r.name:<8} {r.nominal_bps / 1e3:>8.0f} {r.average_bps / 1e3:>8.0f} "
            f"{r.peak_bps / 1e3:>8.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
