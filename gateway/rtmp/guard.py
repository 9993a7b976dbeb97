"""Per-address brute-force guard for stream keys.

`max_failures` refused publishes from one address within `window_s` block that address for
`block_s`: it is refused before its key is even looked at. The tables are bounded (oldest
entries go first) so a spray of addresses cannot grow them without end.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

MAX_TRACKED_ADDRESSES = 65_536
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class GuardCounts:
    failures_total: int  # failed auths recorded
    blocks_total: int  # times an address got blocked
    refused_blocked_total: int  # publishes refused because the address was blocked
    blocked_now: int  # addresses blocked at this moment


class AuthGuard:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        window_s: float = 60.0,
        block_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or block_s <= 0:
            raise ValueError("max_failures, window_s and block_s must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self.block_s = block_s
        self.max_tracked = max_tracked
        self._clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._blocked_until: OrderedDict[str, float] = OrderedDict()
        self._failures_total = 0
        self._blocks_total = 0
        self._refused_blocked_total = 0

    def is_blocked(self, address: str) -> bool:
        """True when `address` is blocked now (counted as a refusal)."""
        until = self._blocked_until.get(address)
        if until is None:
            return False
        if self._clock() >= until:
            del self._blocked_until[address]
            return False
        self._refused_blocked_total += 1
        return True

    def record_failure(self, address: str) -> None:
        now = self._clock()
        self._failures_total += 1
        recent = [t for t in self._failures.pop(address, []) if now - t < self.window_s]
        recent.append(now)
        if len(recent) >= self.max_failures:
            self._blocked_until.pop(address, None)
            self._blocked_until[address] = now + self.block_s
            self._blocks_total += 1
            _trim(self._blocked_until, self.max_tracked)
            logger.warning(
                "rtmp: blocking %s for %.0f s after %d failed publishes",
                address,
                self.block_s,
                len(recent),
            )
            return
        self._failures[address] = recent
        _trim(self._failures, self.max_tracked)

    def record_success(self, address: str) -> None:
        self._failures.pop(address, None)

    def counts(self) -> GuardCounts:
        now = self._clock()
        for address in [a for a, until in self._blocked_until.items() if now >= until]:
            del self._blocked_until[address]
        return GuardCounts(
            failures_total=self._failures_total,
            blocks_total=self._blocks_total,
            refused_blocked_total=self._refused_blocked_total,
            blocked_now=len(self._blocked_until),
        )


def _trim(table: OrderedDict[str, V], limit: int) -> None:
    while len(table) > limit:
        table.popitem(last=False)
