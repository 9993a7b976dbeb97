"""Time bases, as named constants, and the one conversion helper.

Every media timestamp inside onair is in the 90 kHz MPEG clock (`*_90k`), as in MPEG-TS and
HLS. RTMP/FLV carries milliseconds; PyAV frames carry their own `time_base`.
"""

from __future__ import annotations

from fractions import Fraction

CLOCK_90K = 90_000
TIME_BASE_90K = Fraction(1, CLOCK_90K)
TIME_BASE_MS = Fraction(1, 1000)


def rescale(value: int, src: Fraction, dst: Fraction) -> int:
    """Convert `value` ticks of `src` into ticks of `dst`, rounding to nearest."""
    return round(value * src / dst)


def ms_to_90k(value_ms: int) -> int:
    return value_ms * 90


def bitrate_bps(size_bytes: int, duration_90k: int) -> int:
    """The bits per second of `size_bytes` spanning `duration_90k` (a segment's, a GOP's)."""
    return round(size_bytes * 8 * CLOCK_90K / max(1, duration_90k))


def seconds_90k(value_90k: int) -> float:
    return value_90k / CLOCK_90K
