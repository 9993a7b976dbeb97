"""dash.js's BOLA, ported for the ABR bench (`python -m bench.abr`).

`Bola` is dash.js 5.1.1's `BolaRule` (src/streaming/rules/abr/BolaRule.js; BOLA-E of
Spiteri, Sitaraman, Sparacio, "From Theory to Practice: Improving Bitrate Adaptation in the
DASH Reference Player", MMSys 2018): log utilities, Vp and gp from a buffer target of
max(18 s, 10 s + 2 s x rungs), the placeholder buffer that counts live waiting as buffer,
the BOLA-O cap against oscillation, start-up from throughput, and the delay it asks for
when the buffer is above the rung's level — combined, as dash.js combines rules (the lowest
rung wins), with the `InsufficientBufferRule` that BolaRule relies on for safety and the
`AbandonRequestsRule`, on dash.js's throughput model (EWMA of transfer-time throughput,
half-lives 3 s / 8 s, weight 1.5 x download seconds, x 0.9 safety). The throughput rule is
off, so BOLA decides at every buffer level (dash.js's default "dynamic" strategy would only
hand over to BOLA above 18 s of buffer, which a live player never has).
"""

from __future__ import annotations

import math

from bench.abr_media import Media
from bench.abr_sim import Download, Progress, Regime, View

MINIMUM_BUFFER_S = 10.0
MINIMUM_BUFFER_PER_LEVEL_S = 2.0
PLACEHOLDER_BUFFER_DECAY = 0.99
BUFFER_TIME_DEFAULT_S = 18.0  # streaming.buffer.bufferTimeDefault


class DashThroughput:
    """dash.js ThroughputModel/ThroughputController in EWMA mode, kbit/s."""

    def __init__(self, fast_s: float = 3, slow_s: float = 8, weight_per_ms: float = 0.0015):
        self.fast_s, self.slow_s, self.weight_per_ms = fast_s, slow_s, weight_per_ms
        self.fast = self.slow = self.total_weight = 0.0

    def add(self, kbps: float, download_ms: float) -> None:
        weight = self.weight_per_ms * download_ms
        fast_alpha = math.pow(0.5, weight / self.fast_s)
        self.fast = (1 - fast_alpha) * kbps + fast_alpha * self.fast
        slow_alpha = math.pow(0.5, weight / self.slow_s)
        self.slow = (1 - slow_alpha) * kbps + slow_alpha * self.slow
        self.total_weight += weight

    def average_kbps(self) -> float:
        if self.total_weight <= 0:
            return math.nan
        fast = self.fast / (1 - math.pow(0.5, self.total_weight / self.fast_s))
        slow = self.slow / (1 - math.pow(0.5, self.total_weight / self.slow_s))
        return round(min(fast, slow))

    def safe_kbps(self) -> float:
        return self.average_kbps() * 0.9  # bandwidthSafetyFactor


class Bola:
    """dash.js's BolaRule + InsufficientBufferRule + AbandonRequestsRule (module docstring)."""

    IBR_SAFETY = 0.7  # insufficientBufferRule.throughputSafetyFactor
    IBR_IGNORE = 2  # insufficientBufferRule.segmentIgnoreCount
    ABANDON_MULTIPLIER = 1.8  # abandonRequestsRule.abandonDurationMultiplier
    ABANDON_MIN_MS = 500  # minSegmentDownloadTimeThresholdInMs
    ABANDON_MIN_SAMPLES = 6  # minThroughputSamplesThreshold
    PROGRESS_S = 0.05  # XHR progress events come at most every 50 ms
    INITIAL_KBPS = 1000  # dash.js DEFAULT_VIDEO_BITRATE

    def __init__(self, media: Media, regime: Regime) -> None:
        self.kbps = [r.peak_bps / 1000 for r in media.rungs]  # Representation bandwidth
        self.chunk_s = regime.chunk_s
        self.top = len(self.kbps) - 1
        utilities = [math.log(k) for k in self.kbps]
        self.utilities = [u - utilities[0] + 1 for u in utilities]
        buffer_time = max(
            BUFFER_TIME_DEFAULT_S, MINIMUM_BUFFER_S + MINIMUM_BUFFER_PER_LEVEL_S * len(self.kbps)
        )
        self.gp = (self.utilities[-1] - 1) / (buffer_time / MINIMUM_BUFFER_S - 1)
        self.vp = MINIMUM_BUFFER_S / self.gp
        self.throughput = DashThroughput()
        self.steady = False
        self.placeholder = 0.0
        self.current = self.optimal(self.INITIAL_KBPS)  # bolaState.currentRepresentation
        self.level = self.current  # what the player fetches
        self.most_advanced_start = math.nan
        self.last_was_replacement = False
        self.last_start = math.nan
        self.last_duration_s = math.nan
        self.last_request_s = math.nan
        self.last_finish_s = math.nan
        self.last_call_s = math.nan
        self.delay = 0.0
        self.ibr_ignore = self.IBR_IGNORE
        self.abandoned: set[int] = set()

    # -- helpers from BolaRule.js and AbrController.js ------------------------------------

    def optimal(self, kbps: float) -> int:
        """getOptimalRepresentationForBitrate: the highest rung at or below `kbps`."""
        if not kbps > 0:
            return 0
        best = 0
        for i, k in enumerate(self.kbps):
            if k <= kbps:
                best = i
        return best

    def from_buffer(self, buffer_s: float) -> int:
        quality, score = 0, -math.inf
        for i, k in enumerate(self.kbps):
            s = (self.vp * (self.utilities[i] - 1 + self.gp) - buffer_s) / k
            if s >= score:
                quality, score = i, s
        return quality

    def max_buffer_for(self, level: int) -> float:
        return self.vp * (self.utilities[level] + self.gp)

    def min_buffer_for(self, level: int) -> float:
        q_kbps, q_utility = self.kbps[level], self.utilities[level]
        low = 0.0
        for i in range(level - 1, -1, -1):
            if self.utilities[i] < self.utilities[level]:
                i_kbps, i_utility = self.kbps[i], self.utilities[i]
                edge = self.vp * (
                    self.gp + (q_kbps * i_utility - i_kbps * q_utility) / (q_kbps - i_kbps)
                )
                low = max(low, edge)
        return low

    # -- the Controller protocol ---------------------------------------------------------

    def bitrate_test(self) -> bool:
        return False

    def delay_s(self) -> float:
        return self.delay

    def stalled(self) -> None:
        if self.steady:  # BUFFER_EMPTY
            self.placeholder = 0.0

    def choose(self, view: View) -> int:
        self.delay = 0.0
        requests = [r for r in (self.bola(view), self.insufficient_buffer(view)) if r is not None]
        if requests and min(requests) != self.level:
            self.level = min(requests)  # getMinSwitchRequest: the lowest bitrate wins
            self.current = self.level  # QUALITY_CHANGE_REQUESTED
        return self.level

    def bola(self, view: View) -> int | None:
        buffer_s = view.buffer_s
        safe = self.throughput.safe_kbps()
        if not self.steady:
            if math.isnan(safe):
                return None
            level = self.optimal(safe)
            self.placeholder = max(0.0, self.min_buffer_for(level) - buffer_s)
            self.current = level
            if not math.isnan(self.last_duration_s) and buffer_s >= self.last_duration_s:
                self.steady = True
            return level
        # _updatePlaceholderBuffer
        now = view.now_s
        if not math.isnan(self.last_finish_s):
            self.placeholder += max(0.0, now - self.last_finish_s)
        elif not math.isnan(self.last_call_s):
            self.placeholder += max(0.0, now - self.last_call_s)
        self.last_call_s = now
        self.last_start = self.last_request_s = self.last_finish_s = math.nan
        level = self.from_buffer(buffer_s + self.placeholder)
        for_throughput = self.optimal(safe)
        if level > self.current and level > for_throughput:  # BOLA-O
            level = for_throughput if for_throughput > self.current else self.current
        delay = max(0.0, buffer_s + self.placeholder - self.max_buffer_for(level))
        if delay <= self.placeholder:
            self.placeholder -= delay
            delay = 0.0
        else:
            delay -= self.placeholder
            self.placeholder = 0.0
            if level == self.top:
                delay = 0.0
        self.delay = delay
        self.current = level
        return level

    def insufficient_buffer(self, view: View) -> int | None:
        if self.ibr_ignore > 0:
            return None
        if view.level >= 0 and not view.playing:  # buffer state BUFFER_EMPTY
            return 0
        kbps = self.throughput.average_kbps() * self.IBR_SAFETY * view.buffer_s / self.chunk_s
        if math.isnan(kbps) or kbps <= 0:
            return None
        return self.optimal(kbps)

    def downloaded(self, download: Download, view: View) -> None:
        transfer_ms = max((download.done_s - download.first_byte_s) * 1000, 1)
        self.throughput.add(8 * download.size_bytes / transfer_ms, transfer_ms)
        self.ibr_ignore = max(0, self.ibr_ignore - 1)  # BYTES_APPENDED_END_FRAGMENT
        # METRIC_ADDED (HTTP request) then MEDIA_FRAGMENT_LOADED, each ending in _checkNewSegment
        self.last_request_s, self.last_finish_s = download.request_s, download.done_s
        start = download.done_s  # stands for chunk.start: only its order matters here
        if math.isnan(self.most_advanced_start) or start > self.most_advanced_start:
            self.most_advanced_start = start
            self.last_was_replacement = False
        else:
            self.last_was_replacement = True
        self.last_start = start
        self.last_duration_s = self.chunk_s
        self.current = download.level
        self.check_new_segment(view.buffer_s)

    def check_new_segment(self, buffer_s: float) -> None:
        if math.isnan(self.last_start) or math.isnan(self.last_request_s):
            return
        self.placeholder *= PLACEHOLDER_BUFFER_DECAY
        if not math.isnan(self.last_finish_s):
            at_request = buffer_s + (self.last_finish_s - self.last_request_s)
            ceiling = max(0.0, self.max_buffer_for(self.current) - at_request)
            self.placeholder = min(ceiling, self.placeholder)
        if self.last_was_replacement and not math.isnan(self.last_duration_s):
            self.placeholder += self.last_duration_s
        self.last_start = self.last_request_s = math.nan

    def abandon(self, p: Progress) -> int | None:
        if p.first_byte_s is None or p.index in self.abandoned or p.level <= 0:
            return None
        if p.buffer_s > BUFFER_TIME_DEFAULT_S:
            return None
        since_first_s = p.now_s - p.first_byte_s
        samples = 1 + int(since_first_s / self.PROGRESS_S)
        if (
            samples < self.ABANDON_MIN_SAMPLES
            or since_first_s * 1000 <= self.ABANDON_MIN_MS
            or p.loaded_bytes >= p.total_bytes
            or p.loaded_bytes <= 0
        ):
            return None
        kbps = round(8 * p.loaded_bytes / (since_first_s * 1000))
        if kbps <= 0:
            return None
        estimated_s = p.total_bytes * 8 / kbps / 1000
        if estimated_s < self.chunk_s * self.ABANDON_MULTIPLIER:
            return None
        level = self.optimal(kbps)
        total_at_level = p.total_bytes * self.kbps[level] / self.kbps[p.level]
        if p.total_bytes - p.loaded_bytes <= total_at_level:
            return None
        self.abandoned.add(p.index)
        self.current = level  # QUALITY_CHANGE_REQUESTED
        want = self.min_buffer_for(level) if level > 0 else MINIMUM_BUFFER_S
        self.placeholder = min(self.placeholder, max(0.0, want - p.buffer_s))
        self.level = level
        return level
