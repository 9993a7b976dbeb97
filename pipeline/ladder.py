"""The rendition ladder and the rule that fits it to a source."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import ConfigError

# ASCII digits without leading zeros, so a rung's name is its spec and the origin's rendition
# pattern (gateway/origin/hls.py) takes it; at most 999999 kbps (`\d+` let "0p0:0" and a
# 5000-digit rate through: a rung nobody could serve or encode, and a ValueError)
_RUNG = re.compile(
    r"(?P<height>[1-9][0-9]{1,3})p(?P<fps>[1-9][0-9]{1,2})(?::(?P<kbps>[1-9][0-9]{0,5}))?"
)


@dataclass(frozen=True, slots=True)
class Rendition:
    """One rung: `720p60` at 4.5 Mbps. Width follows the source aspect ratio."""

    height: int
    fps: int
    bitrate_bps: int

    @property
    def name(self) -> str:
        return f"{self.height}p{self.fps}"

    def output_fps(self, source_fps: float) -> float:
        """30 fps rungs halve a 60 fps source; no rung raises the source frame rate."""
        if source_fps <= self.fps + 0.5:
            return source_fps
        return source_fps / round(source_fps / self.fps)

    def frame_step(self, source_fps: float) -> int:
        """Keep every n-th source frame."""
        return max(1, round(source_fps / self.output_fps(source_fps)))

    def output_size(self, source_width: int, source_height: int) -> tuple[int, int]:
        """Even width and height, aspect ratio kept, never above the source."""
        height = min(self.height, source_height)
        width = round(source_width * height / source_height)
        return width - width % 2, height - height % 2

    def label(self, source_fps: float) -> str:
        """The name viewers see, with the frame rate actually produced (720p30 from 720p30)."""
        return f"{self.height}p{round(self.output_fps(source_fps))}"


@dataclass(frozen=True, slots=True)
class Ladder:
    rungs: tuple[Rendition, ...]

    @classmethod
    def parse(cls, spec: str, variable: str = "ONAIR_LADDER") -> Ladder:
        """`"1080p60:6000,720p60:4500"` (kbps) → a ladder, highest first."""
        rungs: list[Rendition] = []
        for part in (p.strip() for p in spec.split(",")):
            match = _RUNG.fullmatch(part)
            if not match or not match["kbps"]:
                raise ConfigError(
                    variable, f"rung {part[:40]!r} is not HEIGHTpFPS:KBPS (720p60:4500)"
                )
            kbps = int(match["kbps"])
            rungs.append(Rendition(int(match["height"]), int(match["fps"]), kbps * 1000))
        names = [r.name for r in rungs]
        if not rungs or len(set(names)) != len(names):
            raise ConfigError(variable, "needs at least one rung and no rung twice")
        return cls(tuple(sorted(rungs, key=lambda r: (r.height, r.fps), reverse=True)))

    def get(self, name: str) -> Rendition:
        for rung in self.rungs:
            if rung.name == name:
                return rung
        raise KeyError(name)

    def for_source(self, width: int, height: int, fps: float) -> list[Rendition]:
        """Rungs that apply to a source: none above its height (no upscaling), and of two
        rungs that would produce the same height and frame rate only the first is kept."""
        del width
        seen: set[str] = set()
        chosen: list[Rendition] = []
        for rung in self.rungs:
            if rung.height > height:
                continue
            label = rung.label(fps)
            if label in seen:
                continue
            seen.add(label)
            chosen.append(rung)
        return chosen


DEFAULT_LADDER = "1080p60:6000,720p60:4500,480p30:1500,360p30:800,160p30:300"
