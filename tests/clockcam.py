"""A camera whose frames show when they were taken: the publisher of bench.glass and of the
low-latency e2e test.

`Camera` renders 1280x720 frames at 30 fps in real time, each carrying the wall clock's
milliseconds (mod 2^24) as a row of 24 black/white blocks across the top (`STRIP_H` rows)
over a scrolling pattern (real motion for the encoder), and pipes them to ffmpeg, which
encodes them as OBS set up for low latency would (x264 veryfast, `tune=zerolatency`, a 2 s
keyframe interval unless told otherwise, CBR 3 Mb/s, AAC 96 kb/s) and publishes them over
RTMP. The time drawn is taken just before the frame goes to the encoder. bench/glass_view.mjs
reads it back off the screen.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

WIDTH, HEIGHT, FPS = 1280, 720, 30
BITS = 24
BLOCK_W = 53  # 24 x 53 = 1272 of 1280 columns
STRIP_H = 60  # rows of the block strip, of 720 (the viewer reads the strip's middle)


class Camera(threading.Thread):
    """Renders clock-stamped frames in real time into ffmpeg's stdin (rawvideo, yuv420p)."""

    def __init__(self, rtmp_url: str, seconds: float, log: Path, keyframe_s: int = 2) -> None:
        super().__init__(daemon=True)
        self.seconds = seconds
        gop = str(keyframe_s * FPS)
        args = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}",
            "-framerate", str(FPS), "-i", "pipe:0",
            "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
            "-b:v", "3000k", "-maxrate", "3000k", "-bufsize", "3000k", "-pix_fmt", "yuv420p",
            "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
            "-c:a", "aac", "-b:a", "96k", "-shortest", "-f", "flv", rtmp_url,
        ]  # fmt: skip
        self.log = log.open("wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=self.log)
        self.frames = 0
        # a diagonal pattern, scrolled 8 pixels a frame: the encoder has real motion to code
        period = 64
        row = bytes((x * 4) % 200 + 28 for x in range(WIDTH + period * 8))
        self._rest_rows = HEIGHT - STRIP_H
        self._pattern = b"".join(
            row[(y * 3) % period : (y * 3) % period + WIDTH + period * 4]
            for y in range(self._rest_rows)
        )
        self._stride = WIDTH + period * 4
        self._chroma = bytes([128]) * (WIDTH * HEIGHT // 2)

    def frame(self, ms: int, index: int) -> bytes:
        value = ms % (1 << BITS)
        blocks = b"".join(
            (b"\xeb" if value >> (BITS - 1 - i) & 1 else b"\x10") * BLOCK_W for i in range(BITS)
        )
        line = blocks + b"\x10" * (WIDTH - BITS * BLOCK_W)
        shift = (index * 8) % 256
        rest = b"".join(
            self._pattern[y * self._stride + shift : y * self._stride + shift + WIDTH]
            for y in range(self._rest_rows)
        )
        return line * STRIP_H + rest + self._chroma

    def run(self) -> None:
        assert self.proc.stdin is not None
        started = time.monotonic()
        try:
            while self.frames < self.seconds * FPS:
                due = started + self.frames / FPS
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                data = self.frame(int(time.time() * 1000), self.frames)
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
                self.frames += 1
        except BrokenPipeError:
            pass
        finally:
            self.proc.stdin.close()
            self.proc.wait(30)
            self.log.close()
