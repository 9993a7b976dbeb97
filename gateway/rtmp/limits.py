"""What one RTMP connection may spend, and the allowance that meters it.

Every publisher shares one event loop, so a connection's cost must be bounded before anyone
has checked its key. The limits, and what each protects:

- `min_chunk_size` (128, the protocol's own default, so a client that never sends Set Chunk
  Size is fine; OBS and ffmpeg send 4096): smaller chunks multiply the per-chunk header work
  (chunk size 1 costs a header per byte).
- `prepublish_max_bytes` / `prepublish_max_messages`: until a publish has been accepted once,
  the whole connection (handshake included) may send this much. A real client needs ~4 KiB
  and ~10 messages (handshake, connect, releaseStream, FCPublish, createStream, publish); the
  budget bounds the CPU an anonymous client can cost (a zero-length message is one byte) and
  the memory it can hold in unfinished messages.
- `max_messages_per_s` (burst: two seconds' worth): after the publish, messages a second; a
  real stream sends ~100 (30-60 fps video plus ~47 AAC frames a second at 48 kHz).
- `parse_slice_bytes`: the server feeds at most this much to a session, then yields to the
  event loop, so one connection's read never holds the loop for long.
- `parse_cpu_share` / `parse_cpu_burst_s`: CPU time spent parsing a connection's bytes (its
  own thread time, so a busy machine does not count against it), as a share of one core
  sustained, with a burst. A real stream needs well under 1 %; past the allowance the
  connection is closed.

Each refusal raises `pipeline.errors.BudgetExceeded` naming the budget; the server counts it
(`protocol_errors_total` and `budget_exceeded_total`) and logs it at a limited rate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RtmpLimits:
    min_chunk_size: int = 128
    prepublish_max_bytes: int = 64 * 1024
    prepublish_max_messages: int = 128
    max_messages_per_s: float = 1000.0
    parse_slice_bytes: int = 16 * 1024
    parse_cpu_share: float = 0.25
    parse_cpu_burst_s: float = 1.0

    def __post_init__(self) -> None:
        if self.min_chunk_size < 1 or self.prepublish_max_bytes < 1:
            raise ValueError("min_chunk_size and prepublish_max_bytes must be positive")
        if self.prepublish_max_messages < 1 or self.max_messages_per_s <= 0:
            raise ValueError("message budgets must be positive")
        if self.parse_slice_bytes < 1 or self.parse_cpu_share <= 0 or self.parse_cpu_burst_s <= 0:
            raise ValueError("parse_slice_bytes and the CPU budget must be positive")


class Allowance:
    """A token bucket of some quantity (messages, CPU seconds): `rate` a second, at most
    `burst` saved up, starting full. The caller passes the clock."""

    __slots__ = ("burst", "rate", "tokens", "updated_s")

    def __init__(self, rate: float, burst: float, now_s: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated_s = now_s

    def refill(self, now_s: float) -> float:
        """Top up for the time passed; return what is available now."""
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated_s = now_s
        return self.tokens

    def spend(self, amount: float, now_s: float) -> bool:
        """Take `amount` (it may drive the balance negative); False once it is overdrawn."""
        self.refill(now_s)
        self.tokens -= amount
        return self.tokens >= 0
