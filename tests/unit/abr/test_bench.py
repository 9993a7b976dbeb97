"""The ABR bench's simulator (bench/abr_sim.py) and its controllers on short synthetic
traces, with outcomes a broken controller (or a broken player model) would fail."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.abr import CONTROLLERS, main
from bench.abr_media import Media
from bench.abr_sim import PARTS, SEGMENTS, Download, Progress, Regime, Session, Trace, View
from bench.abr_sim import simulate as run_session
from tests.unit.abr import synthetic

MEDIA = synthetic.media()  # wire bitrates 330, 880, 1650, 4950, 6600 kb/s
SESSION_S = 120.0


class Fixed:
    """A broken controller: always the same rung, whatever happens."""

    level = 4

    def __init__(self, media: Media, regime: Regime) -> None:
        pass

    def choose(self, view: View) -> int:
        return self.level

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


def simulate(controller: str, trace: Trace, regime: Regime = SEGMENTS) -> Session:
    factory = Fixed if controller == "fixed-top" else CONTROLLERS[controller]
    return run_session(MEDIA, trace, regime, factory, SESSION_S)


def test_trace_delivers_bits_interval_by_interval_and_loops() -> None:
    trace = synthetic.trace("t", (1, 1000), (2, 0), (1, 3000))  # 4 Mbit per 4 s loop
    assert trace.bits_by(0.5) == pytest.approx(500_000)
    assert trace.bits_by(2.0) == pytest.approx(1_000_000)  # nothing during the outage
    assert trace.bits_by(4.0) == pytest.approx(4_000_000)
    assert trace.bits_by(9.0) == pytest.approx(9_000_000)  # second loop, 1 s into it
    assert trace.time_for(1_000_000) == pytest.approx(1.0)
    assert trace.time_for(1_000_001) == pytest.approx(3.0, abs=1e-6)  # waits out the outage
    assert trace.time_for(5_500_000) == pytest.approx(7 + 1 / 6)  # 0.5 Mbit at 3 Mb/s
    assert trace.rtt_at(2.5) == 0.1


def test_qoe_counts_bitrate_per_two_seconds_stalls_and_switches() -> None:
    session = Session(chunk_s=0.5, bitrate_mbps_s=8 * 1.5, switch_mbps=0.7, rebuffer_s=1.0)
    session.media_s = 8.0  # four 2 s steps at 1.5 Mb/s on average
    assert session.qoe() == pytest.approx((4 * 1.5 - 4.3 * 1.0 - 0.7) / 4)


def test_the_frozen_ratio_counts_start_up_and_the_rebuffer_ratio_does_not() -> None:
    session = Session(chunk_s=2.0, rebuffer_s=2.0, startup_s=3.0, media_s=15.0)
    figures = session.figures()
    assert figures["rebuffer_ratio"] == pytest.approx(2 / 17)
    assert figures["frozen_ratio"] == pytest.approx(5 / 20)
    assert figures["startup_s"] == 3.0


def test_a_slow_first_chunk_is_start_up_not_rebuffering() -> None:
    """The top rung's first segment (13.2 Mbit) takes over 13 s at 1 Mb/s: the viewer waits
    that long for a picture, and that is start-up (latency), not a stall."""
    trace = synthetic.trace("steady", (10, 1000))
    top = simulate("fixed-top", trace)
    assert top.startup_s > 13.0
    assert top.figures()["frozen_ratio"] > top.figures()["rebuffer_ratio"]


@pytest.mark.parametrize("controller", ["onair", "hlsjs"])
def test_constant_1_mbps_ends_on_the_rung_below_it_without_stalling(controller: str) -> None:
    session = simulate(controller, synthetic.trace("1mbps", (60, 1000)))
    assert session.levels[-1] == 1  # 880 kb/s on the wire; the next rung needs 1.65 Mb/s
    assert session.levels[-10:] == [1] * 10
    assert session.rebuffer_s == 0
    assert session.switches <= 1


def test_onair_settles_below_what_parts_can_keep_up_with() -> None:
    """0.5 s parts at 1 Mb/s: 880 kb/s would need 0.54 s a part with the 100 ms round
    trip, so the lowest rung is the one that keeps up; onair neither stalls nor flaps."""
    session = simulate("onair", synthetic.trace("1mbps", (60, 1000)), PARTS)
    assert session.rebuffer_s == 0
    assert session.levels[-40:] == [0] * 40
    assert session.switches == 0


def test_a_broken_controller_fails_the_same_check() -> None:
    session = simulate("fixed-top", synthetic.trace("1mbps", (60, 1000)))
    assert session.levels[-1] != 1 and session.rebuffer_s > 10


@pytest.mark.parametrize("regime", [SEGMENTS, PARTS], ids=["segments", "parts"])
def test_a_drop_to_200_kbps_switches_down_within_one_segment(regime: Regime) -> None:
    drop_s = 90.0  # wall-clock time of the drop (the viewer joins at 60 s)
    trace = synthetic.trace("drop", (drop_s, 4000), (3600, 200))
    session = simulate("onair", trace, regime)
    before = [lvl for t, lvl in zip(session.requests_s, session.levels, strict=True) if t < drop_s]
    after = [
        lvl
        for t, lvl in zip(session.requests_s, session.levels, strict=True)
        if t >= drop_s + SEGMENTS.chunk_s
    ]
    assert min(before[-5:]) >= 2  # it was high before the drop
    assert after and set(after) == {0}  # every chunk asked for a segment after it: lowest


def test_climbs_back_when_the_network_recovers() -> None:
    trace = synthetic.trace("dip", (80, 6000), (20, 300), (3600, 6000))
    session = simulate("onair", trace)
    assert 0 in session.levels
    assert session.levels[-1] == 3  # 4.95 Mb/s keeps up with 6 Mb/s; 6.6 would not


def test_json_output_has_the_shape_the_issue_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"duration_ms": 1000, "bandwidth_kbps": k, "latency_ms": 100} for k in (800, 3000)]
    (tmp_path / "a.json").write_text(json.dumps(rows * 30))
    monkeypatch.setattr("bench.abr.load_media", lambda: MEDIA)
    assert main(["--traces", str(tmp_path), "--session-s", "30", "--jobs", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["segments", "parts"]
    for regime in out.values():
        assert list(regime) == ["note", "hlsjs", "bola", "onair"]
        for figures in regime.values():
            assert set(figures) == {
                "qoe",
                "bitrate_kbps",
                "rebuffer_ratio",
                "switches_per_min",
                "latency_s",
            }
            assert all(math.isfinite(v) for v in figures.values())
