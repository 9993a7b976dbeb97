"""What a rebuild does, decided before any media is touched: which rungs, where the stream's
chunks are in `onair.ingest.gops`, and whether retention has kept them; the rebuild's errors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.errors import NotFound, OnairError
from pipeline.ladder import Ladder, Rendition
from topics.specs import GOPS, STREAMS
from workers.vod.history import StreamHistory

_RUNG = re.compile(r"^(?P<height>\d{2,4})p(?P<fps>\d{2,3})(?::(?P<kbps>\d+))?$")


class RebuildError(OnairError):
    """The stream cannot be rebuilt as asked."""


class ReplayExpired(RebuildError):
    """The stream's GOP chunks are no longer in the topic."""


def resolve_rungs(
    requested: Sequence[str] | None, ladder: Ladder, width: int, height: int, fps: float
) -> list[Rendition]:
    """The rungs to produce for a `width`x`height`@`fps` source. None → the live ladder's rule.
    Otherwise each entry is a rung of the ladder by name or by label (`720p60` or the
    `720p30` it gives a 30 fps source), or a new one with its bitrate (`540p30:2000`)."""
    if not requested:
        return ladder.for_source(width, height, fps)
    rungs: list[Rendition] = []
    for spec in requested:
        match = _RUNG.match(spec.strip())
        if match is None:
            raise RebuildError(f"rendition {spec!r} is not HEIGHTpFPS or HEIGHTpFPS:KBPS")
        known = next((r for r in ladder.rungs if spec.strip() in (r.name, r.label(fps))), None)
        if match["kbps"]:
            rung = Rendition(int(match["height"]), int(match["fps"]), int(match["kbps"]) * 1000)
        elif known is not None:
            rung = known
        else:
            names = ", ".join(r.name for r in ladder.rungs)
            raise RebuildError(
                f"rendition {spec!r} is not in the ladder ({names}): give its bitrate, "
                f"e.g. {spec.strip()}:1200"
            )
        if rung.height > height:
            raise RebuildError(
                f"rendition {spec!r} is above the source ({width}x{height}): no upscaling"
            )
        if rung.label(fps) in {r.label(fps) for r in rungs}:
            raise RebuildError(f"rendition {spec!r} asked twice")
        rungs.append(rung)
    return sorted(rungs, key=lambda r: (r.height, r.fps), reverse=True)


@dataclass(frozen=True, slots=True)
class ReplayRange:
    """Where a stream's chunks are: one partition, first..last offset (the end marker)."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    gops: int  # last_sequence + 1


def replay_range(history: StreamHistory, topic: str = GOPS) -> ReplayRange:
    started, ended = history.started, history.ended
    if started is None:
        raise NotFound(f"stream {history.stream_id}: no StreamStarted in {STREAMS}")
    if ended is None:
        raise RebuildError(f"stream {history.stream_id} has not ended yet")
    if started["gops_partition"] < 0 or started["gops_first_offset"] < 0:
        raise RebuildError(f"stream {history.stream_id}: its start recorded no GOP offsets")
    if ended["gops_partition"] not in (-1, started["gops_partition"]):
        raise RebuildError(f"stream {history.stream_id}: GOPs in two partitions")
    last = ended["gops_last_offset"]
    if last < started["gops_first_offset"] or ended["last_sequence"] < 0:
        raise RebuildError(f"stream {history.stream_id}: its end recorded no GOP offsets")
    return ReplayRange(
        topic,
        started["gops_partition"],
        started["gops_first_offset"],
        last,
        ended["last_sequence"] + 1,
    )


def check_retention(
    stream_id: str, where: ReplayRange, low: int, high: int, retention_ms: int | None
) -> None:
    """Refuse when any of the stream's chunks is below the partition's low watermark."""
    if where.first_offset >= low and where.last_offset < high:
        return
    kept = f"{retention_ms / 3_600_000:g} hours" if retention_ms else "its retention"
    if where.last_offset >= high:
        raise ReplayExpired(
            f"stream {stream_id}: its GOPs (offsets {where.first_offset}..{where.last_offset} "
            f"of {where.topic} partition {where.partition}) are past the partition's end "
            f"({high}); was the topic recreated?"
        )
    raise ReplayExpired(
        f"stream {stream_id} can no longer be rebuilt: its GOPs (offsets "
        f"{where.first_offset}..{where.last_offset} of {where.topic} partition "
        f"{where.partition}) fell out of retention; the partition now starts at offset {low} "
        f"({where.topic} keeps {kept})"
    )
