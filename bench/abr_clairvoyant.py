"""The ceiling row of `python -m bench.abr --clairvoyant`: a rung chooser that knows each trace
in advance.

bench/abr_clairvoyant.go searches, per trace, the rung of every chunk that scores best in the
player model (bench/abr_sim.py's arithmetic, redone in Go for speed); each plan is then
replayed here, in bench/abr_sim.py itself, by `Scripted`, and scored like every controller's
session. No causal controller can beat a plan that knows the trace, so its QoE is as much as
any controller could reach on these traces (less whatever the search misses: the bench prints
what a wider search finds).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

from bench.abr_media import Media
from bench.abr_sim import JOIN_S, Download, Progress, Regime, Session, Trace, View, simulate

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(__file__).with_suffix(".go")
SEARCHES = ((0.1, 32), (0.1, 64))  # (grid s, beam): the plans, and a wider check of them


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
    binary = directory / SOURCE.stem
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOCACHE": str(ROOT / ".cache" / "go-build")}
    subprocess.run(["go", "build", "-o", str(binary), str(SOURCE)], check=True, env=env,
                   cwd=binary.parent, timeout=300)  # fmt: skip
    return binary


def plans(
    binary: Path, spec: dict[str, object], grid_s: float, beam: int
) -> dict[str, tuple[list[int], float]]:
    """Trace name → (rung of each chunk, the QoE the search computed for it)."""
    done = subprocess.run(
        [str(binary), "-grid", str(grid_s), "-beam", str(beam)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, tuple[list[int], float]] = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        out[row["trace"]] = (row["levels"], row["qoe"])
    return out


class Scripted:
    """A controller that plays a plan made in advance: the rung of each chunk, in order."""

    def __init__(self, levels: list[int]) -> None:
        self.levels = iter(levels)

    def choose(self, view: View) -> int:
        return next(self.levels)

    def downloaded(self, download: Download, view: View) -> None:
        pass

    def abandon(self, progress: Progress) -> int | None:
        return None

    def delay_s(self) -> float:
        return 0.0

    def stalled(self) -> None:
        pass

    def bitrate_test(self) -> bool:
        return False


def replay(
    media: Media, trace: Trace, regime: Regime, levels: list[int], session_s: float
) -> Session:
    return simulate(media, trace, regime, lambda _m, _r: Scripted(levels), session_s)
