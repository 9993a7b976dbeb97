"""The ceiling row of `python -m bench.abr --clairvoyant`: a rung chooser that knows each trace
in advance.

bench/abr_clairvoyant.go searches, per trace, the rung of every chunk that scores best in the
player model (bench/abr_sim.py's arithmetic, redone in Go for speed); each plan is then
replayed here, in bench/abr_sim.py itself, by `Scripted`, and scored like every controller's
session. No controller does better than the best plan for the trace it will meet, so the row
is about the most any controller could reach on these traces (the search may miss a better
plan: the bench keeps each trace's best of a narrower and a wider search, and prints what the
wider one added).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.abr_media import Media
from bench.abr_sim import JOIN_S, Download, Progress, Regime, Session, Trace, View, simulate
from bench.machine import build_go

SOURCE = Path(__file__).with_suffix(".go")
SEARCHES = ((0.1, 32), (0.1, 64))  # (grid s, beam): the plans, and a wider check of them
START_WAITS_S = (0.0, 4.0)  # waits before the first request the search tries, one by one


def job(
    media: Media,
    regime: Regime,
    traces: list[Trace],
    session_s: float,
    weights: tuple[float, float],
) -> dict[str, object]:
    """What bench/abr_clairvoyant.go reads: the Player's parameters and arrays, as they are."""
    per = round(media.segment_s / media.part_s)
    count = media.segments * per if regime.parts else media.segments
    return {
        "chunk_s": regime.chunk_s,
        "target_latency_s": regime.target_latency_s,
        "join_s": JOIN_S,
        "chunks": math.ceil(session_s / regime.chunk_s),
        "first": round((JOIN_S - regime.target_latency_s) / regime.chunk_s),
        "nominal_mbps": [r.nominal_bps / 1e6 for r in media.rungs],
        "chunk_bytes": [
            [float(media.chunk_bytes(level, i, regime.parts)) for i in range(count)]
            for level in range(len(media.rungs))
        ],
        "start_waits_s": START_WAITS_S,
        "stall_weight": weights[0],
        "switch_weight": weights[1],
        "traces": [
            {
                "name": t.name,
                "durations_s": t.durations_s,
                "bandwidths_bps": t.bandwidths_bps,
                "rtts_s": t.rtts_s,
                "starts_s": t.starts_s,
                "bits_at_start": t.bits_at_start,
            }
            for t in traces
        ],
    }


def build(directory: Path) -> Path:
    """Compile the search into `directory`; the path of the binary."""
    if shutil.which("go") is None:
        raise SystemExit("--clairvoyant needs Go (bench/abr_clairvoyant.go)")
    return build_go(directory, SOURCE)


@dataclass(frozen=True, slots=True)
class Plan:
    wait_s: float  # before the first request
    levels: list[int]  # rung of each chunk
    qoe: float  # as the search computed it


def plans(binary: Path, spec: dict[str, object], grid_s: float, beam: int) -> dict[str, Plan]:
    """Trace name → the best plan the search found for it."""
    done = subprocess.run(
        [str(binary), "-grid", str(grid_s), "-beam", str(beam)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, Plan] = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        out[row["trace"]] = Plan(row["wait_s"], row["levels"], row["qoe"])
    return out


class Scripted:
    """A controller that plays a plan made in advance: a wait before the first request, then
    the rung of each chunk, in order."""

    def __init__(self, plan: Plan) -> None:
        self.levels = iter(plan.levels)
        self.wait_s = plan.wait_s

    def choose(self, view: View) -> int:
        return next(self.levels)

    def downloaded(self, download: Download, view: View) -> None:
        pass

    def abandon(self, progress: Progress) -> int | None:
        return None

    def delay_s(self) -> float:
        wait, self.wait_s = self.wait_s, 0.0
        return wait

    def stalled(self) -> None:
        pass

    def bitrate_test(self) -> bool:
        return False


def replay(media: Media, trace: Trace, regime: Regime, plan: Plan, session_s: float) -> Session:
    return simulate(media, trace, regime, lambda _m, _r: Scripted(plan), session_s)
