"""Captured publishes: real ffmpeg pushing to a tiny threaded server built on RtmpSession.

The bytes ffmpeg sends are recorded as they arrive, so tests can replay a genuine client
through the parsers. Captures are made once per test session.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass

import pytest

from gateway.rtmp.session import PublishRequested, RtmpSession

FFMPEG = shutil.which("ffmpeg")


@dataclass(frozen=True)
class Capture:
    client_bytes: bytes  # everything ffmpeg sent, handshake included
    key: str


def capture_publish(
    *, size: str = "640x360", seconds: float = 2.0, extra: tuple[str, ...] = (), key: str = "k"
) -> Capture:
    """Run ffmpeg against a one-shot server; return the bytes it sent."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = bytearray()

    def serve() -> None:
        conn, _ = listener.accept()
        session = RtmpSession()
        with conn:
            conn.settimeout(20)
            while chunk := conn.recv(65536):
                received.extend(chunk)
                out, events = session.feed(chunk)
                if any(isinstance(e, PublishRequested) for e in events):
                    more, _ = session.accept_publish()
                    out += more
                conn.sendall(out)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    cmd = [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-c:a", "aac",
        "-t", str(seconds), *extra, "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{key}",
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True, timeout=30, capture_output=True)
        thread.join(timeout=10)
    finally:
        listener.close()
    return Capture(bytes(received), key)


@pytest.fixture(scope="session")
def ffmpeg_capture() -> Capture:
    return capture_publish(key="capture-key?token=abc")


@pytest.fixture(scope="session")
def extended_timestamp_capture() -> Capture:
    """Timestamps past 2^24 ms: extended timestamps, repeated on continuation chunks."""
    return capture_publish(size="320x180", seconds=1.0, extra=("-output_ts_offset", "16800"))


@pytest.fixture(scope="session")
def wrapping_capture() -> Capture:
    """Timestamps that wrap mid-stream (ffmpeg's FLV muxer wraps at 2^31 ms)."""
    return capture_publish(size="320x180", seconds=1.5, extra=("-output_ts_offset", "2147483"))
