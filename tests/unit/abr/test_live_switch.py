"""onair's live controller goes up only at a switch point and with a buffer that outlasts
the switch (the new rung's playlist, init segment and first chunk, one after another; plus
half a chunk when LL-HLS's blocking reload waits for the rung's next part). Down-switches
are never held."""

from __future__ import annotations

import pytest

from pipeline.abr.live import SWITCH_FETCHES, LiveAbrController

BITRATES = [500_000, 1_000_000, 2_000_000]


def _fast(*, blocking_reload: bool = False, chunk_s: float = 0.2) -> LiveAbrController:
    """A controller that measured a 20 Mb/s link with 10 ms round trips: its plan is the top."""
    controller = LiveAbrController(
        BITRATES, chunk_s=chunk_s, target_latency_s=3.0, blocking_reload=blocking_reload
    )
    for _ in range(5):
        controller.add_sample(20_000_000 / 8 * chunk_s, chunk_s + 0.01, 0.01)
    return controller


def test_the_plan_climbs_where_nothing_holds_it() -> None:
    assert _fast().choose(2.0, 3.0) == 2


def test_no_up_switch_away_from_a_switch_point() -> None:
    controller = _fast()
    assert controller.choose(2.0, 3.0, switch_point=False) == 0
    assert controller.choose(2.0, 3.0, switch_point=True) == 2


@pytest.mark.parametrize("blocking_reload", [False, True])
def test_no_up_switch_with_a_buffer_the_switch_would_outlast(blocking_reload: bool) -> None:
    controller = _fast(blocking_reload=blocking_reload)
    needed = controller.switch_s(2)
    fetch_s = 2_000_000 * 0.2 / controller.estimate_bps()  # type: ignore[operator]
    wait_s = 0.1 if blocking_reload else 0.0  # half a 0.2 s part
    assert needed == pytest.approx(SWITCH_FETCHES * controller.rtt_s() + fetch_s + wait_s)
    assert controller.choose(needed * 0.95, 3.0) < 2
    assert controller.choose(needed * 1.05, 3.0) == 2


def test_after_a_down_switch_the_careful_climb_is_held_the_same_way() -> None:
    controller = _fast(chunk_s=2.0)
    controller.choose(6.0, 6.0)
    controller._down(0)  # as a collapse would
    controller.since_down_s = 100.0
    controller.up_held_s = 100.0
    assert controller.choose(6.0, 6.0, switch_point=False) == 0
    assert controller.choose(0.05, 6.0) == 0  # below the switch: held
    assert controller.choose(6.0, 6.0) == 1  # one rung, at a switch point, buffer enough


def test_down_switches_are_not_held() -> None:
    controller = _fast()
    controller.choose(2.0, 3.0)
    assert controller.level == 2
    for _ in range(5):
        controller.add_sample(300_000 / 8 * 0.2, 0.2, 0.01)  # the link fell to 300 kb/s
    assert controller.choose(0.1, 3.0, switch_point=False) == 0
