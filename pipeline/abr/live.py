"""onair's live-aware ABR controller: which rung to fetch next when the buffer is seconds, not
minutes, and a stall costs latency as well as a frozen picture.

The player runs its JavaScript twin, `gateway/http/static/abr.js`: the same algorithm step
for step, checked by `tests/unit/abr/test_parity.py` (both fed the same sequences, every
decision compared). Change one, change the other.

Per chunk (a 2 s segment, or a 0.5 s part in low-latency HLS) of duration `D`:

- **Throughput, robust to outliers.** Each download gives a sample `bits / transfer time`
  (the time to first byte is round trip, not bandwidth, and is kept apart as the RTT). The
  estimate is the lower of two harmonic means, over the last `LONG_WINDOW_S` and the last
  `SHORT_WINDOW_S` of media: one lucky burst barely moves a harmonic mean, and the short one
  lets a real drop show within one segment. It is then divided by 1 + the worst relative
  error the estimate made over the last `ERROR_WINDOW` chunks (RobustMPC, Yin et al.,
  SIGCOMM 2015): on a steady link that costs nothing, on a bursty one it buys margin.
- **Buffer and latency in the decision.** For each rung the controller plays the next
  `HORIZON` chunks (at least `HORIZON_S` of media) forward at that rung with throughput at
  the estimate: each chunk costs `rtt + bitrate * D / estimate` seconds, the buffer drains
  by that and gains `D`, and it can never grow past the live room — the latency (the smaller
  of the current and the target) less half a chunk, as the newest chunk is on average `D /
  2` old. Stalls cost `STALL_WEIGHT` per second (the QoE's 4.3), bitrate earns its Mbps per
  2 s of media, a switch costs its |Δ Mbps|. The rung with the best total is the plan. A
  thin buffer or a player at the live edge leaves little slack; a player that fell behind
  has more room.
- **Fast down, careful up, no oscillation.** Down: at once, to the plan, several rungs if
  need be. Up: never past a rung whose chunks, at the (undiscounted) estimate, arrive slower
  than they play — live, such a rung only drains the buffer, and a short plan would climb
  to it, fall back and climb again; one rung at a time, once the plan has been above the
  current rung for `UP_HOLD_S` of media in a row, and not within `DOWN_HOLD_S` of a
  down-switch. Before the first down-switch the plan is followed directly (the start is the
  lowest rung; the player starts from the browser's downlink estimate when it has one). Any
  up-switch waits for a switch point (the player says where: in LL-HLS only a segment's
  first part starts with a keyframe, and a player switching mid-segment fetches the new rung
  from that part again) and for a buffer that outlasts the switch: the
  new rung's playlist, its init segment and its first chunk come one after another
  (`SWITCH_FETCHES` round trips and the chunk's transfer), and with LL-HLS's blocking
  reload the playlist waits for that rung's next chunk to exist (half a chunk on average).
  Found by the LL e2e test: an up-switch 0.3 s after the start, with 0.23 s buffered, froze
  the picture for 0.17 s.
- **Emergency abandon.** While a chunk downloads, if at the rate seen so far it would finish
  after the buffer runs dry and a lower rung fetched now would finish sooner, it is given up
  for the highest lower rung that fits in the buffer (hls.js and dash.js have such a rule; the
  note's controller does not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LONG_WINDOW_S = 8.0  # media seconds of samples in the long harmonic mean
SHORT_WINDOW_S = 2.0  # ...and in the short one
ERROR_WINDOW = 5  # chunks whose estimate errors the discount looks back over
HORIZON = 5  # chunks each rung's plan looks ahead...
HORIZON_S = 4.0  # ...and at least this much media, however short the chunks (LL parts)
STALL_WEIGHT = 4.3  # QoE lost per second of stall (the bench's QoE_lin weight)
SWITCH_WEIGHT = 1.0  # QoE lost per Mbps of switch
UP_SHARE = 1.0  # going up needs the rung's fetch time within this share of a chunk
UP_HOLD_S = 4.0  # media seconds the plan must stay above the current rung to go up one
DOWN_HOLD_S = 8.0  # no up-switch within this many media seconds of a down-switch
MIN_TRANSFER_S = 0.01  # a transfer measured shorter than this counts as this long
ABANDON_AFTER_SHARE = 0.25  # abandon checks start once this share of D has elapsed
SWITCH_FETCHES = 3  # an up-switch fetches the rung's playlist, init segment and chunk in turn


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished (or abandoned) download, and the estimate's relative error on it."""

    bits: float
    transfer_s: float
    ttfb_s: float
    media_s: float
    error: float  # |estimate - rate| / rate, 0 for the first sample

    @property
    def rate_bps(self) -> float:
        return self.bits / self.transfer_s


class LiveAbrController:
    """Rung choice for a live player. Rungs are indices into `bitrates_bps`, ascending.

    Per chunk: `choose(buffer_s, latency_s, switch_point)` before the request and
    `add_sample(...)` when
    it has arrived; `abandon(...)` may be polled while it downloads. Pure: no clock, no I/O.
    """

    def __init__(
        self,
        bitrates_bps: Sequence[float],
        *,
        chunk_s: float,
        target_latency_s: float,
        start_level: int = 0,
        blocking_reload: bool = False,
    ) -> None:
        if not bitrates_bps or list(bitrates_bps) != sorted(bitrates_bps) or bitrates_bps[0] <= 0:
            raise ValueError("bitrates_bps must be positive, ascending and not empty")
        if chunk_s <= 0 or target_latency_s <= 0:
            raise ValueError("chunk_s and target_latency_s must be positive")
        self.bitrates_bps = [float(b) for b in bitrates_bps]
        self.chunk_s = chunk_s
        self.target_latency_s = target_latency_s
        self.level = min(max(start_level, 0), len(self.bitrates_bps) - 1)
        # LL-HLS: a rung's playlist is asked for its next chunk and waits until it exists
        self.blocking_reload = blocking_reload
        self.samples: list[Sample] = []  # oldest first, trimmed to the longest window
        self.switched_down = False  # once true, up-switches go one rung at a time
        self.up_held_s = 0.0  # media seconds the plan has been above the current rung
        self.since_down_s = DOWN_HOLD_S  # media seconds since the last down-switch

    # -- measurements -------------------------------------------------------------------

    def add_sample(self, size_bytes: float, duration_s: float, ttfb_s: float = 0.0) -> None:
        """A download of `size_bytes` took `duration_s` from request to last byte, of which
        `ttfb_s` to the first byte."""
        if size_bytes <= 0 or duration_s <= 0:
            return
        ttfb_s = min(max(ttfb_s, 0.0), duration_s)
        transfer_s = max(duration_s - ttfb_s, MIN_TRANSFER_S)
        bits = size_bytes * 8.0
        rate = bits / transfer_s
        predicted = self.estimate_bps()
        error = 0.0 if predicted is None else abs(predicted - rate) / rate
        self.samples.append(Sample(bits, transfer_s, ttfb_s, self.chunk_s, error))
        kept_s = 0.0
        for index in range(len(self.samples) - 1, -1, -1):
            kept_s += self.samples[index].media_s
            if kept_s >= LONG_WINDOW_S and len(self.samples) - index >= ERROR_WINDOW:
                del self.samples[:index]
                break

    def _harmonic_bps(self, window_s: float) -> float:
        weight = 0.0
        inverse = 0.0
        for index in range(len(self.samples) - 1, -1, -1):
            sample = self.samples[index]
            weight += sample.media_s
            inverse += sample.media_s / sample.rate_bps
            if weight >= window_s:
                break
        return weight / inverse

    def estimate_bps(self) -> float | None:
        """Throughput estimate in bits per second (the lower harmonic mean); None before the
        first sample."""
        if not self.samples:
            return None
        return min(self._harmonic_bps(LONG_WINDOW_S), self._harmonic_bps(SHORT_WINDOW_S))

    def safe_bps(self) -> float | None:
        """The estimate discounted by its worst recent relative error."""
        estimate = self.estimate_bps()
        if estimate is None:
            return None
        worst = 0.0
        for sample in self.samples[-ERROR_WINDOW:]:
            worst = max(worst, sample.error)
        return estimate / (1.0 + worst)

    def rtt_s(self) -> float:
        """Mean time to first byte over the samples kept."""
        if not self.samples:
            return 0.0
        total = 0.0
        for sample in self.samples:
            total += sample.ttfb_s
        return total / len(self.samples)

    # -- decisions ------------------------------------------------------------------------

    def room_s(self, latency_s: float) -> float:
        """The most buffer the live edge allows at this latency (never below one chunk)."""
        return max(min(latency_s, self.target_latency_s) - self.chunk_s / 2, self.chunk_s)

    def horizon_steps(self) -> int:
        """Chunks the plan looks ahead: `HORIZON`, or `HORIZON_S` of media when chunks are
        short (0.2 s parts: 20), so a switch's cost is weighed against as much media."""
        return max(HORIZON, math.floor(HORIZON_S / self.chunk_s + 1e-9))

    def plan_value(
        self, level: int, throughput_bps: float, rtt_s: float, buffer_s: float, room_s: float
    ) -> float:
        """QoE of fetching the next `HORIZON` chunks at `level` if throughput stays at
        `throughput_bps`: Mbps per 2 s of media, minus stalls and the switch from now."""
        fetch_s = rtt_s + self.bitrates_bps[level] * self.chunk_s / throughput_bps
        mbps = self.bitrates_bps[level] / 1e6
        value = -SWITCH_WEIGHT * abs(mbps - self.bitrates_bps[self.level] / 1e6)
        buffer = buffer_s
        for _ in range(self.horizon_steps()):
            stall = max(fetch_s - buffer, 0.0)
            buffer = min(max(buffer - fetch_s, 0.0) + self.chunk_s, room_s)
            value += mbps * self.chunk_s / 2.0 - STALL_WEIGHT * stall
        return value

    def plan(self, buffer_s: float, latency_s: float) -> int:
        """The rung whose next `HORIZON` chunks score best (the current one if none measured)."""
        throughput = self.safe_bps()
        if throughput is None:
            return self.level
        room = self.room_s(latency_s)
        rtt = self.rtt_s()
        best = self.level
        best_value = -math.inf
        for level in range(len(self.bitrates_bps)):
            value = self.plan_value(level, throughput, rtt, buffer_s, room)
            if value > best_value:
                best, best_value = level, value
        return best

    def sustainable(self, level: int) -> int:
        """The highest rung from the current one up to `level` whose chunks arrive at least
        as fast as they play (within `UP_SHARE` of a chunk's duration) at the estimate: live,
        a rung that cannot keep up only drains the buffer, so going up stops there."""
        throughput = self.estimate_bps()
        if throughput is None:
            return self.level
        rtt = self.rtt_s()
        while level > self.level:
            if (
                rtt + self.bitrates_bps[level] * self.chunk_s / throughput
                <= UP_SHARE * self.chunk_s
            ):
                break
            level -= 1
        return level

    def switch_s(self, level: int) -> float:
        """How long moving up to `level` takes until its first chunk is in: its playlist
        (with blocking reload it waits for the rung's next chunk: half a chunk on average),
        init segment and chunk, one after another."""
        throughput = self.estimate_bps() or self.bitrates_bps[level]
        fetch_s = self.bitrates_bps[level] * self.chunk_s / throughput
        wait_s = self.chunk_s / 2 if self.blocking_reload else 0.0  # the mean wait
        return SWITCH_FETCHES * self.rtt_s() + fetch_s + wait_s

    def choose(self, buffer_s: float, latency_s: float, switch_point: bool = True) -> int:
        """The rung for the next chunk, given the seconds buffered ahead of the playhead, how
        far behind the live edge the playhead is, and whether the next chunk starts with a
        keyframe (a rung can only be joined there)."""
        self.since_down_s += self.chunk_s
        best = self.plan(buffer_s, latency_s)
        if best > self.level:
            best = self.sustainable(best)
        if best < self.level:
            self._down(best)
        elif best == self.level:
            self.up_held_s = 0.0
        elif not self.switched_down:
            if switch_point and buffer_s >= self.switch_s(best):
                self.level = best
        else:
            self.up_held_s += self.chunk_s
            if (
                self.up_held_s >= UP_HOLD_S
                and self.since_down_s >= DOWN_HOLD_S
                and switch_point
                and buffer_s >= self.switch_s(self.level + 1)
            ):
                self.level += 1
                self.up_held_s = 0.0
        return self.level

    def _down(self, level: int) -> None:
        self.level = level
        self.switched_down = True
        self.up_held_s = 0.0
        self.since_down_s = 0.0

    def abandon(
        self,
        level: int,
        loaded_bytes: float,
        total_bytes: float,
        elapsed_s: float,
        buffer_s: float,
    ) -> int | None:
        """While fetching a chunk of `level` (`loaded_bytes` of `total_bytes` after
        `elapsed_s` since the request, `buffer_s` left): the lower rung to fetch instead,
        or None to carry on."""
        if level <= 0 or loaded_bytes <= 0 or elapsed_s < ABANDON_AFTER_SHARE * self.chunk_s:
            return None
        rtt = self.rtt_s()
        rate = loaded_bytes * 8.0 / max(elapsed_s - rtt, MIN_TRANSFER_S)
        remaining_s = (total_bytes - loaded_bytes) * 8.0 / rate
        if remaining_s <= buffer_s:
            return None
        choice = 0
        for lower in range(level):
            if rtt + self.bitrates_bps[lower] * self.chunk_s / rate <= buffer_s:
                choice = lower
        if rtt + self.bitrates_bps[choice] * self.chunk_s / rate >= remaining_s:
            return None
        self.add_sample(loaded_bytes, elapsed_s, min(rtt, elapsed_s))
        self._down(choice)
        return choice
