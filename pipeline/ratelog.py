"""Logging at a limited rate: one line per kind of event every `interval_s`, however many.

A hostile client can cause a refusal per connection or per frame; the log must not become the
cost. `LogLimiter.allow(key)` says whether to log now and how many lines of that key were
held back since the last one, so the next line can say so:

    held = limiter.allow("budget:messages")
    if held is not None:
        logger.warning("rtmp %s: closing: %s%s", peer, reason, suffix(held))
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

logger = logging.getLogger(__name__)

MAX_KEYS = 1024


class LogLimiter:
    def __init__(
        self,
        interval_s: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._clock = clock
        self._last: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()  # at, held back

    def allow(self, key: Hashable) -> int | None:
        """None: do not log now. Otherwise log, with the count of lines held back (often 0)."""
        now = self._clock()
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval_s:
            self._last[key] = (entry[0], entry[1] + 1)
            return None
        self._last.pop(key, None)
        self._last[key] = (now, 0)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return entry[1] if entry is not None else 0


def suffix(held: int) -> str:
    """`" (N more like it not logged)"` when lines were held back, else nothing."""
    return f" ({held} more like it not logged)" if held else ""
