"""The architecture note's `ABRController`, pinned case by case: start level, the window of
5 speeds, 80 % headroom, one rung up per decision, straight down."""

from __future__ import annotations

import pytest

from pipeline.abr.note import ABRController

LADDER = [(6000, 1080), (4500, 720), (1500, 480), (800, 360), (300, 160)]  # as configured
KB = 1000 // 8  # bytes that take 1 s at 1 kbps


def speeds(controller: ABRController, *kbps: float) -> None:
    """One 1 s download per value, at that speed."""
    for value in kbps:
        controller.update_speed(round(value * KB), 1.0)


@pytest.mark.parametrize(
    ("levels", "start"),
    [
        (LADDER, 2),
        (LADDER[:4], 2),
        (LADDER[:2], 1),
        (LADDER[:1], 0),
    ],
    ids=["five-rungs-middle", "four-rungs-upper-middle", "two-rungs", "one-rung"],
)
def test_starts_in_the_middle_and_holds_it_without_measurements(
    levels: list[tuple[int, int]], start: int
) -> None:
    controller = ABRController(levels)
    assert controller.current_level == start
    assert controller.choose_quality() == start
    assert controller.levels == sorted(levels)  # ascending by bitrate, whatever the order given


@pytest.mark.parametrize(
    ("measured_kbps", "expected"),
    [
        ((1875,), 2),  # 80 % = 1500: exactly fits 480p
        ((1874,), 1),  # 80 % = 1499.2: 480p no longer fits
        ((1000,), 1),  # 800 fits
        ((999,), 0),  # 799.2: only 300
        ((100,), 0),  # nothing fits: the lowest rung
        ((1000, 3000), 2),  # mean of the window: 2000 x 0.8 = 1600
    ],
    ids=["fits-at-80pc", "just-over-80pc", "800-fits", "just-under", "none-fits", "mean"],
)
def test_headroom_is_80_percent_of_the_mean(measured_kbps: tuple[int, ...], expected: int) -> None:
    controller = ABRController(LADDER)
    speeds(controller, *measured_kbps)
    assert controller.choose_quality() == expected


def test_speed_is_bits_over_seconds_in_kbps() -> None:
    controller = ABRController(LADDER)
    controller.update_speed(250_000, 2.0)  # 2 Mbit in 2 s
    assert controller.download_speeds == [1000.0]


def test_window_keeps_the_last_five_speeds() -> None:
    controller = ABRController(LADDER)
    speeds(controller, 100, 10_000, 10_000, 10_000, 10_000)
    assert controller.download_speeds == [100.0, 10_000.0, 10_000.0, 10_000.0, 10_000.0]
    assert controller.choose_quality() == 3  # mean 8020 x 0.8: everything fits, one rung up
    speeds(controller, 10_000)  # the 100 drops out of the window
    assert controller.download_speeds == [10_000.0] * 5
    speeds(controller, 1000, 1000, 1000, 1000)  # one 10 000 left: mean 2800 x 0.8 = 2240
    assert len(controller.download_speeds) == 5
    assert controller.choose_quality() == 2
    speeds(controller, 1000)  # window all 1000: 800 budget
    assert controller.choose_quality() == 1


@pytest.mark.parametrize(
    ("start", "kbps", "decisions"),
    [
        (2, 100_000, [3, 4, 4]),  # plenty: one rung per decision, then stays on top
        (0, 100_000, [1, 2, 3, 4]),  # from the bottom: four decisions to the top
        (2, 2000, [2, 2]),  # 1600 budget: 4500 does not fit, stays
    ],
    ids=["middle-to-top", "bottom-to-top", "no-room-to-climb"],
)
def test_goes_up_one_rung_per_decision(start: int, kbps: int, decisions: list[int]) -> None:
    controller = ABRController(LADDER)
    controller.current_level = start
    speeds(controller, kbps)
    assert [controller.choose_quality() for _ in decisions] == decisions


@pytest.mark.parametrize(
    ("start", "kbps", "expected"),
    [
        (4, 100, 0),  # top to bottom in one decision
        (4, 1000, 1),  # top to 360p
        (2, 1000, 1),  # one rung down
        (3, 2000, 2),
    ],
    ids=["top-to-bottom", "top-to-360p", "one-down", "720p-to-480p"],
)
def test_goes_down_at_once(start: int, kbps: int, expected: int) -> None:
    controller = ABRController(LADDER)
    controller.current_level = start
    speeds(controller, kbps)
    assert controller.choose_quality() == expected
    assert controller.current_level == expected


def test_a_zero_duration_raises_as_in_the_note() -> None:
    with pytest.raises(ZeroDivisionError):
        ABRController(LADDER).update_speed(1000, 0.0)
