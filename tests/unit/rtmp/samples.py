"""Small media samples and FLV tag builders shared by the RTMP tests.

The two avcC records and the AudioSpecificConfigs were produced by ffmpeg (libx264, aac) from
the lavfi test sources; they are a few dozen bytes each.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

AVCC_640X360 = bytes.fromhex(
    "0142c01effe100196742c01eda0280bfe5c044000003000400000300f03c58ba8001000468ce0fc8"
)
AVCC_320X180 = bytes.fromhex(
    "0142c00dffe100176742c00dda05067e7c0440000003004000000f03c50aa801000468ce0fc8"
)
ASC_48K_MONO = bytes.fromhex("118856e500")
ASC_44K_STEREO = bytes.fromhex("121056e500")
IDR_NAL = bytes.fromhex("65888400") + bytes(12)
P_NAL = bytes.fromhex("419a2000") + bytes(8)


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def avc_header_tag(record: bytes = AVCC_640X360) -> bytes:
    return b"\x17\x00\x00\x00\x00" + record


def avc_frame_tag(keyframe: bool, cts_ms: int = 0, nals: tuple[bytes, ...] | None = None) -> bytes:
    if nals is None:
        nals = (IDR_NAL,) if keyframe else (P_NAL,)
    first = 0x17 if keyframe else 0x27
    return bytes([first, 1]) + cts_ms.to_bytes(3, "big", signed=True) + avcc(*nals)


def aac_header_tag(asc: bytes = ASC_48K_MONO) -> bytes:
    return b"\xaf\x00" + asc


def aac_frame_tag(data: bytes = b"\x21\x10\x04\x60\x8c\x1c") -> bytes:
    return b"\xaf\x01" + data


def read_flv(data: bytes) -> list[tuple[int, int, bytes]]:
    """(tag type, timestamp ms, body) of every tag of an FLV file."""
    assert data[:3] == b"FLV"
    tags = []
    pos = int.from_bytes(data[5:9], "big") + 4
    while pos + 11 <= len(data):
        kind = data[pos]
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        tags.append((kind, ts, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return tags


def ffmpeg_flv(*args: str) -> list[tuple[int, int, bytes]]:
    """Run ffmpeg with `args` (inputs and codec options) writing FLV to a pipe; parse it."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", *args, "-f", "flv", "-"]
    done = subprocess.run(cmd, check=True, capture_output=True, timeout=30)
    return read_flv(done.stdout)
