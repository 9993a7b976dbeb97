"""The architecture note's `ABRController`, exactly as the note gives it: the reference every
other controller is measured against (`python -m bench.abr`).

From `seed-live-streaming-architecture.txt`, section "Adaptive Bitrate Streaming (ABR)":
a sliding window of the last 5 download speeds, 80 % of their mean as the budget, the
highest rung whose bitrate fits, up by at most one rung per decision (down at once), and the
middle rung to start. Only types and docstrings were added; the names, the arithmetic and the
order of operations are the note's (so a zero `time_seconds` raises, as it does there).
"""

from __future__ import annotations

WINDOW = 5
HEADROOM = 0.8


class ABRController:
    """Throughput-only rung choice over `quality_levels` = [(bitrate_kbps, height_p), ...]."""

    def __init__(self, quality_levels: list[tuple[int, int]]) -> None:
        self.levels: list[tuple[int, int]] = sorted(quality_levels)  # ascending by bitrate
        self.current_level: int = len(self.levels) // 2  # start at middle quality
        self.download_speeds: list[float] = []  # sliding window of recent speeds, kbps

    def update_speed(self, bytes_downloaded: int, time_seconds: float) -> None:
        """One finished download: its size and how long it took."""
        speed_kbps = (bytes_downloaded * 8) / (time_seconds * 1000)
        self.download_speeds.append(speed_kbps)
        if len(self.download_speeds) > WINDOW:
            self.download_speeds.pop(0)

    def choose_quality(self) -> int:
        """The index (into the ascending `levels`) of the rung to fetch next."""
        if not self.download_speeds:
            return self.current_level
        avg_speed = sum(self.download_speeds) / len(self.download_speeds)
        # Use 80% of estimated bandwidth to leave headroom
        available = avg_speed * HEADROOM
        # Find highest quality that fits in available bandwidth
        best = 0
        for i, (bitrate, _) in enumerate(self.levels):
            if bitrate <= available:
                best = i
        # Hysteresis: only upgrade by 1 level at a time to avoid flapping
        self.current_level = min(best, self.current_level + 1)
        return self.current_level
