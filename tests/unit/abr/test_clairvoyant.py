"""The bench's ceiling (`python -m bench.abr --clairvoyant`, bench/abr_clairvoyant.go): each
plan the search finds replays in bench/abr_sim.py to the QoE the search computed (the Go
model is the player's, float for float), and neither a controller nor any fixed rung does
better on the same trace."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from bench import abr_clairvoyant as clairvoyant
from bench.abr import CONTROLLERS
from bench.abr_sim import PARTS, SEGMENTS, Regime
from bench.abr_sim import simulate as run_session
from tests.unit.abr import synthetic

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="the search is in Go")

MEDIA = synthetic.media()  # wire bitrates 330, 880, 1650, 4950, 6600 kb/s
SESSION_S = 120.0
TRACES = [
    # fast, a near-outage, middling, a real outage, fast again; looped after 100 s
    synthetic.trace("bumpy", (20, 3000), (6, 150), (30, 1200), (4, 0), (40, 5500)),
    synthetic.trace("mostly-slow", (15, 600), (10, 2500), (5, 100), rtt_s=0.3),
]


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clairvoyant.build(tmp_path_factory.mktemp("clairvoyant"))


@pytest.mark.parametrize("regime", [SEGMENTS, PARTS], ids=["segments", "parts"])
def test_the_plan_scores_what_the_search_computed_and_nothing_beats_it(
    binary: Path, regime: Regime
) -> None:
    spec = clairvoyant.job(MEDIA, regime, TRACES, SESSION_S, (4.3, 1.0))
    found = clairvoyant.plans(binary, spec, 0.1, 32)
    chunks = math.ceil(SESSION_S / regime.chunk_s)
    for trace in TRACES:
        plan = found[trace.name]
        assert len(plan.levels) == chunks
        best = clairvoyant.replay(MEDIA, trace, regime, plan, SESSION_S)
        assert best.qoe() == pytest.approx(plan.qoe, rel=1e-9, abs=1e-9)
        rivals = {
            name: run_session(MEDIA, trace, regime, factory, SESSION_S).qoe()
            for name, factory in CONTROLLERS.items()
        }
        for level in range(len(MEDIA.rungs)):
            for wait_s in (0.0, 3.0):
                fixed = clairvoyant.Plan(wait_s, [level] * chunks, 0.0)
                session = clairvoyant.replay(MEDIA, trace, regime, fixed, SESSION_S)
                rivals[f"always rung {level}, {wait_s:g} s start"] = session.qoe()
        assert best.qoe() >= max(rivals.values()), (trace.name, best.qoe(), rivals)
        assert len(set(plan.levels)) > 1  # these traces reward switching: a plan that never does
