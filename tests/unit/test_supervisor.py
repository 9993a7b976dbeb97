"""`onair up`'s supervisor restarts a dying role with a growing delay, not every second."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from onair.supervisor import RestartPolicy, Supervisor


@pytest.mark.parametrize(
    ("runs", "delays"),
    [
        ([0.1, 0.1, 0.1, 0.1], [1, 2, 4, 8]),
        ([0.1] * 9, [1, 2, 4, 8, 16, 32, 60, 60, 60]),
        ([0.1, 0.1, 120.0, 0.1], [1, 2, 1, 2]),
    ],
    ids=["doubles", "capped", "a-healthy-run-starts-over"],
)
def test_restart_policy(runs: list[float], delays: list[float]) -> None:
    policy = RestartPolicy(base_s=1, max_s=60, healthy_s=60)
    assert [policy.delay_after(ran) for ran in runs] == delays


def test_a_role_that_keeps_dying_is_restarted_less_and_less_often(tmp_path: Path) -> None:
    """A child that exits at once (an unknown sub-command) is restarted after 0.4, 0.8, 1.6 s:
    at most four starts in 3.5 s (restarting it at each check would start it once per child
    lifetime, several times a second)."""
    supervisor = Supervisor(
        {"broken": ["no-such-command"]},
        tmp_path,
        policy=lambda: RestartPolicy(base_s=0.4, max_s=10, healthy_s=60),
        poll_s=0.05,
    )
    supervisor.start("broken")
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        supervisor.step(time.monotonic())
        time.sleep(0.05)
    supervisor.stop()
    assert 3 <= supervisor.starts["broken"] <= 4
    assert "invalid choice" in (tmp_path / "broken.log").read_text()
