"""Which ABR controller serves a live viewer best, on real mobile networks?

    python -m bench.abr [--traces DIR] [--session-s 600] [--jobs N] [--json] [--clairvoyant]

Four controllers, side by side in one run, each in the same live player model
(`bench/abr_sim.py`), over every trace in `--traces` (default: the 86 Norway HSDPA 3G traces
in ../shared/abr-traces/hsdpa-3g), in two regimes:

- `segments`: 2 s segments, 6 s target latency (hls.js `liveSyncDurationCount` 3);
- `parts`: 0.5 s LL-HLS parts, 1.5 s target latency (`PART-HOLD-BACK` = 3 parts).

Controllers: `note` (the architecture note's `ABRController`, pipeline/abr/note.py), `hlsjs`
(hls.js 1.7.4's default, bench/abr_hlsjs.py), `bola` (dash.js 5.1.1's BolaRule with its
companion rules, bench/abr_bola.py) and `onair` (pipeline/abr/live.py, what the player uses).
Every controller sees the rungs' BANDWIDTH as onair's master playlist advertises it (the
measured peak segment bitrate, audio and MPEG-TS overhead included); QoE counts the
ladder's nominal bitrate. The media is an actual onair encode (bench/abr_media.py).

Per controller, averaged over traces: QoE_lin = (Σ bitrate_Mbps - 4.3 x rebuffer_s
- 1 x Σ|Δbitrate_Mbps|) / number of 2 s steps, with bitrate summed per 2 s of media in both
regimes; mean nominal bitrate; rebuffer ratio (stalled / (stalled + media)); switches per
minute of media; mean latency behind the live edge. Start-up is not rebuffering (it shows in
latency); the report also prints it, and the frozen ratio that counts it as stalled.
`--json` prints only `{regime: {controller: {qoe, bitrate_kbps, rebuffer_ratio,
switches_per_min, latency_s}}}`.

Two rows are references, not contenders: `(lowest)`, always the lowest rung (the floor), and
with `--clairvoyant` (Go; a few minutes) the ceiling: for each trace, the best plan a search
finds knowing the whole trace in advance (bench/abr_clairvoyant.py), replayed in the same
player. No controller does better than the best plan for a future it knows; the search comes
close to that plan (a wider one adds almost nothing), so a goal well above the ceiling is out
of reach on those traces.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from bench import abr_clairvoyant as clairvoyant
from bench.abr_bola import Bola
from bench.abr_hlsjs import HlsJsDefault
from bench.abr_media import Media, Rung, load_media
from bench.abr_sim import (
    PARTS,
    SEGMENTS,
    ControllerFactory,
    Download,
    Progress,
    Regime,
    Session,
    Trace,
    View,
    simulate,
)
from bench.machine import describe, usable_cores
from pipeline.abr.live import LiveAbrController
from pipeline.abr.note import ABRController

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACES = ROOT.parent / "shared" / "abr-traces" / "hsdpa-3g"
REGIMES = {"segments": SEGMENTS, "parts": PARTS}
REBUFFER_WEIGHT = 4.3
SWITCH_WEIGHT = 1.0
GOAL_QOE_GAIN = 1.15  # onair >= 1.15 x the note's mean QoE
ISSUE_FIGURES = ("qoe", "bitrate_kbps", "rebuffer_ratio", "switches_per_min", "latency_s")


class NoteAdapter:
    """The note's controller in the player: download speed = size / request-to-last-byte
    time, a decision per chunk, no abandoning."""

    def __init__(self, media: Media, regime: Regime) -> None:
        del regime
        levels = [(r.peak_bps // 1000, int(r.name.split("p")[0])) for r in media.rungs]
        self.abr = ABRController(levels)

    def choose(self, view: View) -> int:
        return self.abr.choose_quality()

    def downloaded(self, download: Download, view: View) -> None:
        self.abr.update_speed(download.size_bytes, download.done_s - download.request_s)

    def abandon(self, progress: Progress) -> int | None:
        return None

    def delay_s(self) -> float:
        return 0.0

    def stalled(self) -> None:
        pass

    def bitrate_test(self) -> bool:
        return False


class OnairAdapter:
    """onair's controller, fed exactly what the player feeds it (gateway/http/static/abr.js)."""

    def __init__(self, media: Media, regime: Regime) -> None:
        self.abr = LiveAbrController(
            [r.average_bps for r in media.rungs],
            chunk_s=regime.chunk_s,
            target_latency_s=regime.target_latency_s,
            blocking_reload=regime.parts,
        )

    def choose(self, view: View) -> int:
        return self.abr.choose(view.buffer_s, view.latency_s)

    def downloaded(self, download: Download, view: View) -> None:
        self.abr.add_sample(
            download.size_bytes,
            download.done_s - download.request_s,
            download.first_byte_s - download.request_s,
        )

    def abandon(self, progress: Progress) -> int | None:
        return self.abr.abandon(
            progress.level,
            progress.loaded_bytes,
            progress.total_bytes,
            progress.now_s - progress.request_s,
            progress.buffer_s,
        )

    def delay_s(self) -> float:
        return 0.0

    def stalled(self) -> None:
        pass

    def bitrate_test(self) -> bool:
        return False


class Lowest(NoteAdapter):
    """Not a contender: always the lowest rung. Its figures are the floor no controller can
    get under on these traces (what is lost while even the lowest rung cannot be fetched in
    real time); the report shows each controller's QoE above it."""

    def choose(self, view: View) -> int:
        return 0


CONTROLLERS: dict[str, ControllerFactory] = {
    "note": NoteAdapter,
    "hlsjs": HlsJsDefault,
    "bola": Bola,
    "onair": OnairAdapter,
}
FLOOR = "lowest"
CEILING = "clairvoyant"
REFERENCES: dict[str, ControllerFactory] = {FLOOR: Lowest}


def load_traces(directory: Path) -> list[Trace]:
    paths = sorted(directory.glob("*.json"))
    if not paths:
        raise SystemExit(f"no *.json traces in {directory}")
    return [Trace.load(p) for p in paths]


def _run_one(job: tuple[Media, Trace, str, str, float]) -> tuple[str, str, dict[str, float]]:
    media, trace, regime_name, controller, session_s = job
    factory = CONTROLLERS.get(controller) or REFERENCES[controller]
    session = simulate(media, trace, REGIMES[regime_name], factory, session_s)
    return regime_name, controller, session.figures()


def run(
    media: Media,
    traces: list[Trace],
    regimes: list[str],
    controllers: list[str],
    session_s: float,
    jobs: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """Every controller on every trace in every regime → mean figures per regime/controller."""
    work = [(media, t, r, c, session_s) for r in regimes for c in controllers for t in traces]
    per: dict[tuple[str, str], list[dict[str, float]]] = {}
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_run_one, work, chunksize=8))
    else:
        results = [_run_one(w) for w in work]
    for regime_name, controller, figures in results:
        per.setdefault((regime_name, controller), []).append(figures)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for regime_name in regimes:
        out[regime_name] = {}
        for controller in controllers:
            rows = per[(regime_name, controller)]
            out[regime_name][controller] = {
                key: statistics.fmean(row[key] for row in rows) for key in rows[0]
            }
    return out


def session_of(
    media: Media, trace: Trace, regime: Regime, controller: str, session_s: float
) -> Session:
    """One session, for tests and for looking at a single trace."""
    return simulate(media, trace, regime, CONTROLLERS[controller], session_s)


def part_kbps(media: Media, rung: Rung) -> float:
    total = sum(sum(parts) for parts in rung.part_bytes)
    return total * 8 / (len(rung.part_bytes) * media.segment_s) / 1000


def report(
    results: dict[str, dict[str, dict[str, float]]],
    media: Media,
    traces_dir: Path,
    trace_count: int,
    session_s: float,
    elapsed_s: float,
) -> str:
    lines = [
        f"traces: {traces_dir} ({trace_count} traces, looped), {session_s:.0f} s of media each",
        f"QoE_lin = (Σ bitrate_Mbps - {REBUFFER_WEIGHT} x rebuffer_s - {SWITCH_WEIGHT} x "
        "Σ|Δbitrate_Mbps|) / 2-s steps; bitrate per 2 s of media in both regimes; "
        "mean over traces",
        f"media: {media.source}",
        "rungs, kbps nominal/average/peak on the wire (MPEG-TS segments): "
        + ", ".join(
            f"{r.name} {r.nominal_bps // 1000}/{r.average_bps // 1000}/{r.peak_bps // 1000}"
            for r in media.rungs
        ),
        "LL-HLS parts (CMAF), average kbps on the wire: "
        + ", ".join(f"{r.name} {part_kbps(media, r):.0f}" for r in media.rungs),
    ]
    for name, regime_results in results.items():
        regime = REGIMES[name]
        floor = regime_results.get(FLOOR)
        lines.append("")
        lines.append(
            f"{name}: {regime.chunk_s:g} s chunks, target latency {regime.target_latency_s:g} s"
        )
        lines.append(
            f"  {'controller':<13} {'QoE':>7} {'kbps':>6} {'rebuf %':>8} "
            f"{'sw/min':>7} {'latency s':>10} {'start s':>8} {'frozen %':>9} {'above floor':>12}"
        )
        for controller, f in regime_results.items():
            above = f"{f['qoe'] - floor['qoe']:>12.3f}" if floor else ""
            label = f"({controller})" if controller in (FLOOR, CEILING) else controller
            lines.append(
                f"  {label:<13} {f['qoe']:>7.3f} {f['bitrate_kbps']:>6.0f} "
                f"{100 * f['rebuffer_ratio']:>8.2f} {f['switches_per_min']:>7.2f} "
                f"{f['latency_s']:>10.2f} {f['startup_s']:>8.2f} "
                f"{100 * f['frozen_ratio']:>9.2f} {above}"
            )
        lines.extend("  " + line for line in goal_lines(regime_results))
    lines.append("")
    lines.append(
        f"({FLOOR}) = always the lowest rung, not a contender: the stalls of the times when "
        "even that rung cannot be fetched in real time"
    )
    if any(CEILING in r for r in results.values()):
        lines.append(
            f"({CEILING}) = the best plan a search finds for each trace known in advance "
            "(bench/abr_clairvoyant.go), replayed in the same player: about the most any "
            "controller could get"
        )
    lines.append(f"machine: {describe()}; bench took {elapsed_s:.0f} s")
    return "\n".join(lines)


def goal_lines(results: dict[str, dict[str, float]]) -> list[str]:
    """The issue's goal, checked literally; "x % higher" of a negative mean is read as
    (onair - note) / |note|. With the floor, also the share of QoE each adds above it."""
    if not {"note", "onair"} <= set(results):
        return []
    onair, note = results["onair"], results["note"]
    gain = (onair["qoe"] - note["qoe"]) / abs(note["qoe"]) if note["qoe"] else math.inf
    checks = [
        (
            f"onair QoE vs note: {100 * gain:+.1f} % (goal >= +{100 * (GOAL_QOE_GAIN - 1):.0f} %)",
            gain >= GOAL_QOE_GAIN - 1,
        ),
        (
            f"onair rebuffer ratio {100 * onair['rebuffer_ratio']:.3f} % "
            f"< note {100 * note['rebuffer_ratio']:.3f} %",
            onair["rebuffer_ratio"] < note["rebuffer_ratio"],
        ),
    ]
    for controller, f in results.items():
        if controller not in ("onair", "note", FLOOR, CEILING):
            checks.append((f"onair QoE above {controller}", onair["qoe"] > f["qoe"]))
    lines = [f"{'ok  ' if ok else 'MISS'} {text}" for text, ok in checks]
    lines.append(
        f"     start-up counted as frozen: onair {100 * onair['frozen_ratio']:.3f} % vs note "
        f"{100 * note['frozen_ratio']:.3f} % (start-up {onair['startup_s']:.2f} s vs "
        f"{note['startup_s']:.2f} s)"
    )
    ceiling = results.get(CEILING)
    if ceiling:
        top = (ceiling["qoe"] - note["qoe"]) / abs(note["qoe"])
        first = (ceiling["first_qoe"] - note["qoe"]) / abs(note["qoe"])
        verdict = "above it" if top < GOAL_QOE_GAIN - 1 else "below it"
        lines.append(
            f"     ({CEILING}) {100 * top:+.1f} % over the note (the narrower search alone: "
            f"{100 * first:+.1f} %): the goal's +{100 * (GOAL_QOE_GAIN - 1):.0f} % is {verdict} "
            "on these traces"
        )
    floor = results.get(FLOOR)
    if floor and note["qoe"] > floor["qoe"]:
        ratio = (onair["qoe"] - floor["qoe"]) / (note["qoe"] - floor["qoe"])
        lines.append(f"     above the floor, onair adds {ratio:.2f}x what the note adds")
    return lines


def scaled_lowest(media: Media, factor: float) -> Media:
    """The media with its lowest rung's segments and parts `factor` times their size."""
    low = media.rungs[0]
    low = dataclasses.replace(
        low,
        name=f"{low.name} x{factor:g}",
        peak_bps=round(low.peak_bps * factor),
        average_bps=round(low.average_bps * factor),
        segment_bytes=tuple(round(b * factor) for b in low.segment_bytes),
        part_bytes=tuple(tuple(round(b * factor) for b in p) for p in low.part_bytes),
    )
    return dataclasses.replace(media, rungs=(low, *media.rungs[1:]))


def ceiling(
    binary: Path, media: Media, traces: list[Trace], regime: Regime, session_s: float
) -> dict[str, float]:
    """The clairvoyant's mean figures: each trace's best plan of every search, replayed in the
    player; plus `first_qoe`, the mean QoE of the first search's plans alone (what the wider
    search added shows how close the searches came to the best there is). A plan whose replay
    does not score what the search computed means the Go model drifted from bench/abr_sim.py."""
    spec = clairvoyant.job(media, regime, traces, session_s, (REBUFFER_WEIGHT, SWITCH_WEIGHT))
    best: dict[str, dict[str, float]] = {}
    first_qoe: float | None = None
    for grid_s, beam in clairvoyant.SEARCHES:
        found = clairvoyant.plans(binary, spec, grid_s, beam)
        for trace in traces:
            plan = found[trace.name]
            figures = clairvoyant.replay(media, trace, regime, plan, session_s).figures()
            if not math.isclose(figures["qoe"], plan.qoe, rel_tol=1e-9, abs_tol=1e-9):
                raise SystemExit(
                    f"{trace.name}: the clairvoyant's plan scores {figures['qoe']:.6f} in "
                    f"bench/abr_sim.py, {plan.qoe:.6f} in bench/abr_clairvoyant.go"
                )
            if trace.name not in best or figures["qoe"] > best[trace.name]["qoe"]:
                best[trace.name] = figures
        if first_qoe is None:
            first_qoe = statistics.fmean(best[t.name]["qoe"] for t in traces)
        logger.info("clairvoyant %s, grid %g s, beam %d: best QoE so far %.3f", regime.name,
                    grid_s, beam, statistics.fmean(f["qoe"] for f in best.values()))  # fmt: skip
    rows = list(best.values())
    assert first_qoe is not None
    return {
        **{key: statistics.fmean(row[key] for row in rows) for key in rows[0]},
        "first_qoe": first_qoe,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.abr", description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    parser.add_argument("--session-s", type=float, default=600.0)
    parser.add_argument("--regimes", default="segments,parts")
    parser.add_argument("--controllers", default=",".join(CONTROLLERS))
    parser.add_argument("--jobs", type=int, default=usable_cores())
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    parser.add_argument(
        "--clairvoyant",
        action="store_true",
        help="add the ceiling: the best plan for each trace known in advance (needs Go; minutes)",
    )
    parser.add_argument(
        "--lowest-scale",
        type=float,
        default=1.0,
        help="what-if: the lowest rung's bytes times this (a cheaper bottom rung: e.g. 0.65 "
        "for low-bitrate audio and fMP4 instead of copied AAC in MPEG-TS)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO, format="%(message)s")
    regimes = [r for r in args.regimes.split(",") if r]
    controllers = [c for c in args.controllers.split(",") if c]
    unknown = [r for r in regimes if r not in REGIMES] + [
        c for c in controllers if c not in CONTROLLERS
    ]
    if unknown:
        parser.error(f"unknown regime or controller: {', '.join(unknown)}")
    if args.clairvoyant and args.json:
        parser.error("--clairvoyant is a row of the report, not of the issue's --json")
    media = load_media()
    if args.lowest_scale != 1.0:
        if not 0 < args.lowest_scale <= 4:
            parser.error("--lowest-scale must be in (0, 4]")
        media = scaled_lowest(media, args.lowest_scale)
    traces = load_traces(args.traces)
    started = time.monotonic()
    if args.json:
        results = run(media, traces, regimes, controllers, args.session_s, args.jobs)
        issue = {
            regime: {c: {k: f[k] for k in ISSUE_FIGURES} for c, f in by.items()}
            for regime, by in results.items()
        }
        print(json.dumps(issue, indent=2))
    else:
        results = run(media, traces, regimes, [*controllers, FLOOR], args.session_s, args.jobs)
        if args.clairvoyant:  # a Go search per regime, side by side
            with tempfile.TemporaryDirectory(prefix="onair-abr-") as work:
                binary = clairvoyant.build(Path(work))
                with ThreadPoolExecutor(len(regimes)) as pool:
                    ceilings = pool.map(
                        lambda r: ceiling(binary, media, traces, REGIMES[r], args.session_s),
                        regimes,
                    )
                    for name, figures in zip(regimes, ceilings, strict=True):
                        results[name][CEILING] = figures
        elapsed = time.monotonic() - started
        print(report(results, media, args.traces, len(traces), args.session_s, elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
