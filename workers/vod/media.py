"""The VOD's media files: `splice_ts()` joins MPEG-TS segments into one continuous MPEG-TS per
run, `join_cmaf()` a CMAF init segment and its segments into one fragmented MP4 per run;
`remux_mp4()` / `remux_stream()` have ffmpeg copy runs into one MP4 (`-c copy -movflags
+faststart`)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from pipeline.errors import MediaError
from pipeline.timebase import CLOCK_90K

FFMPEG = "ffmpeg"
TS_PACKET = 188
_NULL_PID = 0x1FFF


def _first_counters(segment: bytes, known: set[int]) -> dict[int, int]:
    """Continuity counter of each PID's first payload packet (stops once every `known` PID
    is found)."""
    found: dict[int, int] = {}
    for pos in range(0, len(segment) - TS_PACKET + 1, TS_PACKET):
        flags = segment[pos + 3]
        pid = ((segment[pos + 1] & 0x1F) << 8) | segment[pos + 2]
        if pid != _NULL_PID and flags & 0x10 and pid not in found:
            found[pid] = flags & 0x0F
            if known and known <= found.keys():
                break
    return found


def discontinuity_packet(pid: int, counter: int) -> bytes:
    """An adaptation-only packet with discontinuity_indicator set: the next packet of `pid`
    may carry any continuity counter (ISO/IEC 13818-1, 2.4.3.5)."""
    header = bytes((0x47, (pid >> 8) & 0x1F, pid & 0xFF, 0x20 | (counter & 0x0F), 183, 0x80))
    return header + b"\xff" * 182


def splice_ts(segments: Iterable[bytes], out: IO[bytes]) -> int:
    """Write segments as one MPEG-TS stream. Each segment was muxed alone, so its continuity
    counters restart at 0: before every segment but the first, one discontinuity packet per
    PID tells the demuxer so (otherwise it flags the first packet of each segment corrupt).
    Timestamps are left as they are: callers splice runs whose timestamps continue."""
    known: set[int] = set()
    written = 0
    for index, segment in enumerate(segments):
        if len(segment) % TS_PACKET or not segment or segment[0] != 0x47:
            raise MediaError(f"segment {index} of a run is not MPEG-TS")
        if index == 0:
            known = set(_first_counters(segment, set()))
        else:
            firsts = _first_counters(segment, known)
            known |= firsts.keys()
            for pid, counter in sorted(firsts.items()):
                out.write(discontinuity_packet(pid, counter - 1))
                written += TS_PACKET
        out.write(segment)
        written += len(segment)
    return written


def join_cmaf(init: bytes, segments: Iterable[bytes], out: IO[bytes]) -> int:
    """An init segment and CMAF segments that need it → one fragmented MP4 (ISO/IEC 23000-19:
    a CMAF track is its header followed by its fragments). Each fragment carries its own
    decode time (`tfdt`), so nothing is rewritten."""
    if init[4:8] != b"ftyp":
        raise MediaError("the init segment of a run is not an MP4 header")
    out.write(init)
    written = len(init)
    for index, segment in enumerate(segments):
        if segment[4:8] not in (b"moof", b"styp"):
            raise MediaError(f"segment {index} of a run is not a CMAF fragment")
        out.write(segment)
        written += len(segment)
    return written


def remux_mp4(runs: Sequence[tuple[Path, int]], output: Path) -> None:
    """Runs (an MPEG-TS or fragmented MP4 file, its duration in 90 kHz) → one MP4, streams
    copied, moov first.

    ffmpeg's concat demuxer places each run right after the previous one's duration, so a
    reconnect (timestamps starting over) becomes a seamless cut in the MP4's timeline."""
    listing = output.with_name(output.name + ".ffconcat")
    lines = ["ffconcat version 1.0"]
    for path, duration_90k in runs:
        lines += [f"file '{path.name}'", f"duration {duration_90k / CLOCK_90K:.6f}"]
    listing.write_text("\n".join(lines) + "\n")
    command = [
        FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-f", "concat", "-safe", "0", "-i", str(listing),
        "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy",
        "-movflags", "+faststart", "-f", "mp4", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not output.exists():
        raise MediaError(f"ffmpeg remux to {output.name} failed: {result.stderr.strip()[-500:]}")


def remux_stream(segments: Iterable[bytes], output: Path, *, init: bytes | None = None) -> None:
    """Segments whose timestamps continue (one run) → one MP4, straight into ffmpeg's
    standard input: MPEG-TS segments spliced, or with `init` CMAF segments after their init
    segment (one fragmented MP4)."""
    command = [
        FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-f", "mpegts" if init is None else "mp4", "-i", "pipe:0",
        "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy",
        "-movflags", "+faststart", "-f", "mp4", str(output),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=errors)
        assert process.stdin is not None
        try:
            if init is None:
                splice_ts(segments, process.stdin)
            else:
                join_cmaf(init, segments, process.stdin)
            process.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its status and message say why
        except BaseException:
            process.kill()
            process.wait()
            raise
        code = process.wait()
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()
    if code != 0 or not output.exists():
        raise MediaError(f"ffmpeg remux to {output.name} failed: {message[-500:]}")
