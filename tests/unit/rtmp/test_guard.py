from __future__ import annotations

import pytest

from gateway.rtmp.guard import AuthGuard, GuardCounts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# steps: ("fail", address) | ("ok", address) | ("wait", seconds) | ("blocked?", address, expected)
SCENARIOS = [
    ("four-failures-do-not-block", [("fail", "a")] * 4 + [("blocked?", "a", False)]),
    (
        "fifth-failure-blocks",
        [("fail", "a")] * 5 + [("blocked?", "a", True), ("blocked?", "b", False)],
    ),
    (
        "failures-outside-the-window-expire",
        [("fail", "a")] * 4 + [("wait", 61), ("fail", "a"), ("blocked?", "a", False)],
    ),
    (
        "block-lasts-its-period",
        [("fail", "a")] * 5
        + [("wait", 299), ("blocked?", "a", True), ("wait", 1), ("blocked?", "a", False)],
    ),
    (
        "success-resets-the-count",
        [("fail", "a")] * 4 + [("ok", "a"), ("fail", "a"), ("blocked?", "a", False)],
    ),
    (
        "addresses-are-counted-apart",
        [("fail", "a"), ("fail", "b")] * 4 + [("blocked?", "a", False)],
    ),
]


@pytest.mark.parametrize("steps", [s[1] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_scenarios(steps: list[tuple[object, ...]]) -> None:
    clock = Clock()
    guard = AuthGuard(clock=clock)
    for step in steps:
        match step:
            case ("fail", str(address)):
                guard.record_failure(address)
            case ("ok", str(address)):
                guard.record_success(address)
            case ("wait", float(seconds) | int(seconds)):
                clock.now += seconds
            case ("blocked?", str(address), bool(expected)):
                assert guard.is_blocked(address) is expected
            case _:
                raise AssertionError(step)


def test_counts_for_metrics() -> None:
    clock = Clock()
    guard = AuthGuard(max_failures=2, window_s=10, block_s=20, clock=clock)
    for address in ("a", "a", "b", "b", "c"):
        guard.record_failure(address)
    assert guard.is_blocked("a") and guard.is_blocked("a") and not guard.is_blocked("c")
    assert guard.counts() == GuardCounts(
        failures_total=5, blocks_total=2, refused_blocked_total=2, blocked_now=2
    )
    clock.now += 20
    assert guard.counts().blocked_now == 0


def test_tables_are_bounded() -> None:
    guard = AuthGuard(max_failures=1, clock=Clock(), max_tracked=100)
    for i in range(1000):
        guard.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert guard.counts().blocked_now == 100
    assert guard.is_blocked("10.0.3.231")  # the newest stay
    assert not guard.is_blocked("10.0.0.0")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_failures": 0}, {"window_s": 0}, {"block_s": -1}],
    ids=["failures", "window", "block"],
)
def test_refuses_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AuthGuard(**kwargs)  # type: ignore[arg-type]
