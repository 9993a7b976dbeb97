"""The rebuild's progress bar: one redrawn line on a terminal, a line every tenth elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`[#####-----] 120/300 GOPs, 240 s of media, 9.8x real time, ETA 18 s` on one line of a
    terminal, or a line every tenth elsewhere (logs, CI)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 30):
        self.label = label
        self.total = max(1, total)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.started = time.monotonic()
        self._tenth = -1
        self._tty = self.stream.isatty()

    def text(self, done: int, media_s: float, elapsed_s: float) -> str:
        filled = self.width * done // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        speed = media_s / elapsed_s if elapsed_s > 0 else 0.0
        eta = elapsed_s * (self.total - done) / done if done else 0.0
        return (
            f"{self.label} [{bar}] {done}/{self.total} GOPs, {media_s:.0f} s of media, "
            f"{speed:.1f}x real time, ETA {eta:.0f} s"
        )

    def update(self, done: int, media_s: float) -> None:
        line = self.text(done, media_s, time.monotonic() - self.started)
        if self._tty:
            self.stream.write("\r" + line)
        elif done * 10 // self.total > self._tenth:
            self._tenth = done * 10 // self.total
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
