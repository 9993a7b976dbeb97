"""Rate-limited logging: one line per key per interval, and how many were held back."""

from __future__ import annotations

from pipeline.ratelog import LogLimiter, suffix


def test_one_line_per_key_per_interval_then_the_count_held_back() -> None:
    now = [0.0]
    limiter = LogLimiter(10.0, clock=lambda: now[0])
    assert limiter.allow("a") == 0
    assert [limiter.allow("a") for _ in range(3)] == [None, None, None]
    assert limiter.allow("b") == 0  # keys are apart
    now[0] = 10.0
    assert limiter.allow("a") == 3
    assert limiter.allow("a") is None
    assert suffix(3) == " (3 more like it not logged)" and suffix(0) == ""


def test_keys_are_bounded() -> None:
    limiter = LogLimiter(10.0, clock=lambda: 0.0, max_keys=2)
    for key in range(5):
        assert limiter.allow(key) == 0
    assert len(limiter._last) == 2
