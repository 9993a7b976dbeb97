"""Real test media, generated with ffmpeg test patterns, and helpers to look at it.

Nothing here is a committed blob: `make_flv()` renders `testsrc2` + a sine tone with the
ffmpeg CLI into FLV (what an RTMP publisher sends), `gops_from_flv()` demuxes it with PyAV
into `MediaUnit`s exactly as the RTMP gateway would hand them on, and cuts them into `Gop`s.
`cached_flv()` renders each distinct source once per directory, so a session-scoped
`tmp_path_factory` directory makes every test after the first one cheap::

    @pytest.fixture(scope="session")
    def gops(tmp_path_factory: pytest.TempPathFactory) -> list[Gop]:
        flv = cached_flv(tmp_path_factory.mktemp("media"), seconds=6)
        return gops_from_flv(flv, "s1")
"""

from __future__ import annotations

import json
import logging
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from pipeline.gop import Gop, GopCutter
from pipeline.media import CodecConfig, MediaUnit, Track
from pipeline.timebase import TIME_BASE_90K, rescale

logger = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"


def make_flv(
    path: Path,
    seconds: float,
    size: str = "1280x720",
    fps: int = 30,
    gop_seconds: float = 2,
    audio: bool = True,
    bframes: int = 2,
    video_kbps: int = 3000,
    bt709: bool = False,
) -> Path:
    """Render a test pattern (H.264 High, fixed GOP, B-frames) and a sine (AAC-LC) into FLV.
    `bt709` tags the video as OBS does (BT.709 primaries, transfer and matrix, limited
    range); otherwise it carries no colour description."""
    gop_frames = round(fps * gop_seconds)
    cmd = [
        FFMPEG, "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
    ]  # fmt: skip
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    cmd += [
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-b:v", f"{video_kbps}k", "-bf", str(bframes),
        "-g", str(gop_frames), "-keyint_min", str(gop_frames), "-sc_threshold", "0",
    ]  # fmt: skip
    if bt709:
        cmd += ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]
        cmd += ["-color_range", "tv"]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "96k", "-ac", "2"]
    cmd += ["-f", "flv", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def cached_flv(directory: Path, seconds: float, **params: Any) -> Path:
    """`make_flv()` into `directory`, once per distinct set of parameters."""
    name = "_".join(f"{k}-{v}" for k, v in sorted({"seconds": seconds, **params}.items()))
    path = directory / f"src_{name.replace('/', '-')}.flv"
    if not path.exists():
        make_flv(path.with_suffix(".tmp.flv"), seconds, **params).rename(path)
    return path


def units_from_flv(path: Path) -> tuple[CodecConfig, list[MediaUnit]]:
    """Demux an FLV file into the codec config and the media units, in file order."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        avcc = video.codec_context.extradata
        if avcc is None:
            raise ValueError(f"{path}: no AVC decoder configuration record")
        rate = video.average_rate or video.guessed_rate or Fraction(30)
        config = CodecConfig(
            avc_config=avcc,
            aac_config=audio.codec_context.extradata if audio is not None else None,
            width=video.codec_context.width,
            height=video.codec_context.height,
            fps=float(rate),
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else 0,
            audio_channels=audio.codec_context.channels if audio is not None else 0,
        )
        units: list[MediaUnit] = []
        for packet in container.demux():
            if packet.size == 0 or packet.dts is None or packet.time_base is None:
                continue
            dts = rescale(packet.dts, packet.time_base, TIME_BASE_90K)
            pts = (
                rescale(packet.pts, packet.time_base, TIME_BASE_90K)
                if packet.pts is not None
                else dts
            )
            track = Track.VIDEO if packet.stream.type == "video" else Track.AUDIO
            units.append(MediaUnit(track, pts, dts, packet.is_keyframe, bytes(packet)))
    return config, units


def gops_from_flv(path: Path, stream_id: str = "test") -> list[Gop]:
    """Demux an FLV file and cut it into GOPs with the real `GopCutter`."""
    config, units = units_from_flv(path)
    cutter = GopCutter(stream_id=stream_id, config=config)
    gops = [gop for unit in units if (gop := cutter.push(unit)) is not None]
    last = cutter.flush()
    if last is not None:
        gops.append(last)
    return gops


def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    """Run ffprobe with JSON output; raises if it logs any error (`-v error` prints nothing
    on a clean file)."""
    proc = subprocess.run(
        [FFPROBE, "-v", "error", "-of", "json", *args, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    if proc.stderr.strip():
        raise AssertionError(f"ffprobe reported errors on {path}: {proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def probe_frames(path: Path, stream: str = "v:0", limit: int | None = None) -> list[dict[str, Any]]:
    """Decode the frames of one stream (all, or the first `limit`); each dict has pts (in the
    stream's time base, 1/90000 for MPEG-TS), pts_time, key_frame, pict_type, width, height."""
    fields = "frame=pts,pts_time,pkt_dts_time,key_frame,pict_type,width,height"
    args = ["-select_streams", stream, "-show_entries", fields, "-show_frames"]
    if limit is not None:
        args += ["-read_intervals", f"%+#{limit}"]
    frames: list[dict[str, Any]] = ffprobe(path, *args)["frames"]
    return frames


def probe_streams(path: Path) -> list[dict[str, Any]]:
    streams: list[dict[str, Any]] = ffprobe(path, "-show_streams")["streams"]
    return streams
