"""hls.js's default ABR, ported for the ABR bench (`python -m bench.abr`).

`HlsJsDefault` is hls.js 1.7.4's `AbrController` with its default config (the version in
package-lock.json; source: node_modules/hls.js/src/controller/abr-controller.ts,
utils/ewma-bandwidth-estimator.ts, utils/ewma.ts, config.ts): dual EWMA of download speed
(half-lives 3 s and 9 s of download time, min of the two), 0.95 of it to stay or go down
and 0.7 to go up, the start-up bitrate test on the lowest rung, `firstAutoLevel`, and the
emergency rule (`_abandonRulesCheck`) that aborts a fragment loading too slowly. For a live
stream `findBestLevel` ignores fetch durations, as hls.js does. Media-capabilities and codec
tiers are left out (one codec here).
"""

from __future__ import annotations

import math

from bench.abr_media import Media
from bench.abr_sim import Download, Progress, Regime, View


class Ewma:
    """hls.js utils/ewma.ts."""

    def __init__(self, half_life: float, estimate: float = 0.0, weight: float = 0.0) -> None:
        self.half_life = half_life
        self.alpha = math.exp(math.log(0.5) / half_life) if half_life else 0.0
        self.estimate = estimate
        self.total_weight = weight

    def sample(self, weight: float, value: float) -> None:
        adj = math.pow(self.alpha, weight)
        self.estimate = value * (1 - adj) + adj * self.estimate
        self.total_weight += weight

    def get(self) -> float:
        if self.alpha:
            zero = 1 - math.pow(self.alpha, self.total_weight)
            if zero:
                return self.estimate / zero
        return self.estimate


class EwmaBandwidthEstimator:
    """hls.js utils/ewma-bandwidth-estimator.ts (abrEwmaSlowLive 9, abrEwmaFastLive 3)."""

    def __init__(self, default_bps: float, slow: float = 9, fast: float = 3) -> None:
        self.default_bps = default_bps
        self.slow = Ewma(slow)
        self.fast = Ewma(fast)
        self.ttfb = Ewma(slow)
        self.default_ttfb_ms = 100.0

    def sample(self, duration_ms: float, size_bytes: float) -> None:
        if size_bytes <= 0:
            return
        min_delay_ms = min(50.0, size_bytes / 100000)
        duration_s = max(duration_ms, min_delay_ms) / 1000
        bandwidth = 8 * size_bytes / duration_s
        self.fast.sample(duration_s, bandwidth)
        self.slow.sample(duration_s, bandwidth)

    def sample_ttfb(self, ttfb_ms: float) -> None:
        seconds = ttfb_ms / 1000
        weight = math.sqrt(2) * math.exp(-(seconds * seconds) / 2)
        self.ttfb.sample(weight, max(ttfb_ms, 5))

    def can_estimate(self) -> bool:
        return self.fast.total_weight >= 0.001

    def estimate(self) -> float:
        if self.can_estimate():
            return min(self.fast.get(), self.slow.get())
        return self.default_bps

    def estimate_ttfb_ms(self) -> float:
        if self.ttfb.total_weight >= 0.001:
            return self.ttfb.get()
        return self.default_ttfb_ms


class HlsJsDefault:
    """hls.js's default ABR (see the module docstring). Levels ascending, as hls.js sorts them."""

    BW_FACTOR = 0.95  # abrBandWidthFactor
    BW_UP_FACTOR = 0.7  # abrBandWidthUpFactor
    DEFAULT_ESTIMATE = 5e5  # abrEwmaDefaultEstimate
    MAX_STARVATION_DELAY = 4.0  # maxStarvationDelay
    MAX_LOADING_DELAY = 4.0  # maxLoadingDelay

    def __init__(self, media: Media, regime: Regime) -> None:
        self.max_bps = [r.peak_bps for r in media.rungs]  # BANDWIDTH
        self.avg_bps = [r.average_bps for r in media.rungs]  # AVERAGE-BANDWIDTH
        self.chunk_s = regime.chunk_s
        self.top = len(self.max_bps) - 1
        self.first_level = self.top  # onair's master lists the highest rung first
        self.estimator = EwmaBandwidthEstimator(self.DEFAULT_ESTIMATE)
        self.last_loaded = -1
        self.load_level = -1
        self.first_selection = -1
        self.first_auto_floor = -1
        self.forced = -1  # _nextAutoLevel set by the emergency rule
        self.bitrate_test_delay = 0.0
        self.last_level_load_s = 0.0  # transfer time of a media playlist: ~0
        self.abort_at: float | None = None  # the emergency rule's one-shot abort timer
        self.watching = True  # the 100 ms abandon check is armed
        self.frag_index = -1

    # -- the Controller protocol ---------------------------------------------------------

    def bitrate_test(self) -> bool:
        return True  # testBandwidth: true, startLevel: undefined

    def delay_s(self) -> float:
        return 0.0

    def stalled(self) -> None:
        pass

    def choose(self, view: View) -> int:
        level = self.next_auto_level(view.buffer_s)
        self.load_level = level
        return level

    def downloaded(self, download: Download, view: View) -> None:
        del view
        start_ms, first_ms = download.request_s * 1000, download.first_byte_s * 1000
        end_ms = download.done_s * 1000
        # onFragLoaded
        self.estimator.sample_ttfb(first_ms - start_ms)
        if download.level == self.forced:
            self.forced = -1
        self.first_selection = -1
        if not download.test:
            self.last_loaded = download.level
        # onFragBuffered
        processing_ms = (
            end_ms - start_ms - min(first_ms - start_ms, self.estimator.estimate_ttfb_ms())
        )
        self.estimator.sample(processing_ms, download.size_bytes)
        if download.test:
            self.bitrate_test_delay = processing_ms / 1000
        else:
            self.bitrate_test_delay = 0.0
            if self.first_auto_floor > -1 and self.estimator.can_estimate():
                self.first_auto_floor = -1

    # -- nextAutoLevel ---------------------------------------------------------------------

    def next_auto_level(self, buffer_s: float) -> int:
        use_estimate = self.estimator.can_estimate()
        loaded_first = self.last_loaded > -1
        if self.forced != -1:
            return self.forced
        if use_estimate and loaded_first:
            return self.next_abr_level(buffer_s)
        return self.first_auto_level(buffer_s)

    def first_auto_level(self, buffer_s: float) -> int:
        best = self.find_best_level(
            self.estimator.estimate(), 0, self.top, buffer_s / 2, self.MAX_STARVATION_DELAY, 1, 1
        )
        if best > -1:
            return best
        floor = math.inf if self.first_auto_floor == -1 else self.first_auto_floor
        return int(min(max(self.first_level, 0), self.top, floor))

    def next_abr_level(self, buffer_s: float) -> int:
        avg_bw = self.estimator.estimate()
        bw_factor, up_factor = self.BW_FACTOR, self.BW_UP_FACTOR
        if buffer_s:
            best = self.find_best_level(avg_bw, 0, self.top, buffer_s, 0, bw_factor, up_factor)
            if best >= 0:
                return best
        max_starvation = min(self.chunk_s, self.MAX_STARVATION_DELAY)
        if not buffer_s and self.bitrate_test_delay:
            max_loading = min(self.chunk_s, self.MAX_LOADING_DELAY)
            max_starvation = max_loading - self.bitrate_test_delay
            bw_factor = up_factor = 1
        best = self.find_best_level(
            avg_bw, 0, self.top, buffer_s, max_starvation, bw_factor, up_factor
        )
        if best > -1:
            return best
        if self.load_level >= 0 and self.max_bps[0] < self.max_bps[self.load_level]:
            return 0
        return max(self.load_level, 0)

    def time_to_load(self, ttfb_s: float, bandwidth: float, bits: float, switch: bool) -> float:
        """getTimeToLoadFrag."""
        frag_s = ttfb_s + bits / bandwidth
        playlist_s = ttfb_s + self.last_level_load_s if switch else 0
        return frag_s + playlist_s

    def find_best_level(
        self,
        current_bw: float,
        min_level: int,
        max_level: int,
        starvation_s: float,
        max_starvation_s: float,
        bw_factor: float,
        up_factor: float,
    ) -> int:
        max_fetch_s = starvation_s + max_starvation_s
        base = self.first_level if self.last_loaded == -1 else self.last_loaded
        first_selection = self.load_level == -1 or self.last_loaded == -1
        if first_selection:
            if self.first_selection != -1:
                return self.first_selection
            current_bw = max(current_bw, self.max_bps[min_level])  # the start tier's minBitrate
        ttfb_s = self.estimator.estimate_ttfb_ms() / 1000
        duration = self.chunk_s
        for i in range(max_level, min_level - 1, -1):
            up = i > base
            adjusted = (up_factor if up else bw_factor) * current_bw
            average_ok = starvation_s >= duration * 2 and max_starvation_s == 0
            bitrate = self.avg_bps[i] if average_ok else self.max_bps[i]
            fetch_s = self.time_to_load(ttfb_s, adjusted, bitrate * duration, True)
            live_any = not self.bitrate_test_delay  # live streams ignore the fetch duration
            if adjusted >= bitrate and (
                fetch_s <= ttfb_s or not math.isfinite(fetch_s) or live_any or fetch_s < max_fetch_s
            ):
                if first_selection:
                    self.first_selection = i
                return i
        return -1

    # -- _abandonRulesCheck ------------------------------------------------------------------

    def abandon(self, p: Progress) -> int | None:
        if p.index != self.frag_index:  # FRAG_LOADING: a new timer
            self.frag_index, self.watching, self.abort_at = p.index, True, None
        if self.abort_at is not None:
            if p.now_s >= self.abort_at:
                self.abort_at = None
                return self.abort_and_switch(p)
            return None
        if not self.watching or p.level <= 0:
            return None
        blocking = self.forced > -1 and self.forced != p.level
        if not blocking and self.last_loaded < 0:
            return None  # nothing buffered yet: the media element is not playing
        time_loading_ms = (p.now_s - p.request_s) * 1000
        ttfb_estimate_ms = self.estimator.estimate_ttfb_ms()
        duration = self.chunk_s
        if time_loading_ms <= max(ttfb_estimate_ms, 1000 * duration / 2):
            return None
        starvation_s = p.buffer_s
        ttfb_ms = (p.first_byte_s - p.request_s) * 1000 if p.first_byte_s is not None else -1
        loaded_first = p.loaded_bytes > 0 and ttfb_ms > -1
        bw_estimate = self.estimator.estimate()
        expected = max(p.loaded_bytes, round(duration * self.avg_bps[p.level] / 8))
        streaming_ms = time_loading_ms - ttfb_ms if loaded_first else time_loading_ms
        if streaming_ms < 1 and loaded_first:
            streaming_ms = min(time_loading_ms, p.loaded_bytes * 8 / bw_estimate)
        load_rate = p.loaded_bytes * 1000 / streaming_ms if loaded_first else 0.0  # bytes/s
        ttfb_s = ttfb_estimate_ms / 1000
        if load_rate:
            loaded_delay = (expected - p.loaded_bytes) / load_rate
        else:
            loaded_delay = expected * 8 / bw_estimate + ttfb_s
        if loaded_delay <= starvation_s:
            return None
        bwe = load_rate * 8 if load_rate else bw_estimate
        next_delay = math.inf
        level = p.level - 1
        while level > 0:
            next_delay = self.time_to_load(ttfb_s, bwe, duration * self.max_bps[level], True)
            if next_delay < min(starvation_s, duration + ttfb_s):
                break
            level -= 1
        if next_delay >= loaded_delay or next_delay > duration * 10:
            return None
        if loaded_first:
            self.estimator.sample(time_loading_ms - min(ttfb_estimate_ms, ttfb_ms), p.loaded_bytes)
        else:
            self.estimator.sample_ttfb(time_loading_ms)
        next_bitrate = self.max_bps[level]
        if self.estimator.estimate() * self.BW_UP_FACTOR > next_bitrate:
            self.first_auto_floor = min(level, self.first_level)
            self.reset_estimator(next_bitrate)
        best = self.find_best_level(next_bitrate, 0, level, 0, starvation_s, 1, 1)
        if best > -1:
            level = best
        self.forced = self.load_level = level
        self.watching = False
        if blocking or loaded_delay > next_delay * 2:
            return self.abort_and_switch(p)
        self.abort_at = p.now_s + next_delay
        return None

    def abort_and_switch(self, p: Progress) -> int | None:
        level = self.load_level
        if level <= 0:
            return None  # hls.js aborts only when the new level is above the lowest
        lowest = self.find_best_level(self.max_bps[0], 0, level, 0, p.buffer_s, 1, 1)
        if lowest == -1:
            lowest = 0
        self.forced = self.load_level = lowest
        self.first_auto_floor = min(lowest, self.first_level)
        self.reset_estimator(self.max_bps[lowest])
        return lowest

    def reset_estimator(self, default_bps: float) -> None:
        self.first_selection = -1
        self.estimator = EwmaBandwidthEstimator(default_bps)
