"""The live player model the ABR bench runs controllers in, one network trace at a time.

Time is wall-clock seconds since the stream started; media time equals it at the encoder, so
chunk `k` (a segment or a part of `chunk_s`) covers media `[k*chunk_s, (k+1)*chunk_s)` and
can be fetched from `(k+1)*chunk_s` on (the packager's own delay is left out: it is the
same for every controller).

- **Join.** The viewer arrives at `JOIN_S` and starts `target_latency_s` behind the edge (hls.js
  `liveSyncDurationCount` 3 with 2 s segments = 6 s; LL-HLS `PART-HOLD-BACK` of three 0.5 s
  parts = 1.5 s), so the first chunk is `(JOIN_S - target_latency_s) / chunk_s`. Playback
  begins when it is downloaded: startup time adds latency, not rebuffering.
- **Fetching.** One request at a time, in order. A request for a chunk not yet published
  waits for it. The first byte comes one round trip (the trace's `latency_ms`) after the
  request; the bytes then flow at the trace's bandwidth, interval by interval (`Trace`).
  Switching rungs first costs one more round trip (the rung's live media playlist).
- **Buffer.** Seconds downloaded ahead of the playhead, capped twice: nothing beyond the
  live edge exists, and the player buffers no more than the target latency (a chunk is
  requested once it fits under that cap), so a viewer who fell behind after a stall does not
  get a deeper buffer than one at the target.
- **Stalls.** An empty buffer freezes the playhead until the next chunk arrives: that time is
  rebuffering, and the latency grows by as much (the player does not skip to catch up, as
  hls.js does not by default).
- **Controllers** see what a player sees (`View`, `Download`, `Progress`) and may abandon a
  download in flight (`Progress` every `POLL_S`): the partial bytes are wasted and the chunk
  is requested again at the lower rung.

A session ends after `session_s` seconds of media. `Session` keeps what the QoE needs.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.abr_media import Media

JOIN_S = 60.0
POLL_S = 0.1  # hls.js checks its abandon rule every 100 ms


@dataclass(frozen=True, slots=True)
class Trace:
    """A throughput trace, looped: intervals of `duration_s` at `bandwidth_bps`, each with a
    round-trip time. Bits delivered by time t (`bits_by`) and its inverse (`time_for`) are
    computed from cumulative sums, so a download of any size costs O(log n)."""

    name: str
    durations_s: tuple[float, ...]
    bandwidths_bps: tuple[float, ...]
    rtts_s: tuple[float, ...]
    starts_s: tuple[float, ...]  # start of each interval within one loop
    bits_at_start: tuple[float, ...]  # bits delivered from the loop's start to each interval

    @classmethod
    def from_intervals(cls, name: str, intervals: list[tuple[float, float, float]]) -> Trace:
        """`intervals` = [(duration_s, bandwidth_bps, rtt_s), ...]."""
        starts: list[float] = []
        bits: list[float] = []
        t = b = 0.0
        for duration, bandwidth, _rtt in intervals:
            starts.append(t)
            bits.append(b)
            t += duration
            b += duration * bandwidth
        starts.append(t)
        bits.append(b)
        return cls(
            name,
            tuple(i[0] for i in intervals),
            tuple(i[1] for i in intervals),
            tuple(i[2] for i in intervals),
            tuple(starts),
            tuple(bits),
        )

    @classmethod
    def load(cls, path: Path) -> Trace:
        """Sabre's JSON form: [{"duration_ms", "bandwidth_kbps", "latency_ms"}, ...]."""
        rows = json.loads(path.read_text())
        intervals = [
            (r["duration_ms"] / 1000, r["bandwidth_kbps"] * 1000.0, r["latency_ms"] / 1000)
            for r in rows
            if r["duration_ms"] > 0
        ]
        if not intervals or sum(d * b for d, b, _ in intervals) <= 0:
            raise ValueError(f"{path}: no interval delivers any bits")
        return cls.from_intervals(path.stem, intervals)

    @property
    def loop_s(self) -> float:
        return self.starts_s[-1]

    @property
    def loop_bits(self) -> float:
        return self.bits_at_start[-1]

    def rtt_at(self, t: float) -> float:
        offset = t % self.loop_s
        index = min(bisect.bisect_right(self.starts_s, offset) - 1, len(self.rtts_s) - 1)
        return self.rtts_s[index]

    def bits_by(self, t: float) -> float:
        """Bits a saturated link delivers from time 0 to `t`."""
        loops, offset = divmod(t, self.loop_s)
        index = min(bisect.bisect_right(self.starts_s, offset) - 1, len(self.durations_s) - 1)
        within = (offset - self.starts_s[index]) * self.bandwidths_bps[index]
        return loops * self.loop_bits + self.bits_at_start[index] + within

    def time_for(self, bits: float) -> float:
        """The earliest time by which `bits` have been delivered since time 0."""
        loops, rest = divmod(bits, self.loop_bits)
        if rest == 0 and loops > 0:
            loops, rest = loops - 1, self.loop_bits
        index = bisect.bisect_left(self.bits_at_start, rest) - 1
        index = min(max(index, 0), len(self.durations_s) - 1)
        while self.bandwidths_bps[index] <= 0 or self.bits_at_start[index + 1] < rest:
            index += 1  # skip outages (and rounding at a boundary)
        within = (rest - self.bits_at_start[index]) / self.bandwidths_bps[index]
        return loops * self.loop_s + self.starts_s[index] + within


@dataclass(frozen=True, slots=True)
class Regime:
    name: str  # "segments" or "parts"
    chunk_s: float
    target_latency_s: float

    @property
    def parts(self) -> bool:
        return self.name == "parts"


SEGMENTS = Regime("segments", 2.0, 6.0)
PARTS = Regime("parts", 0.5, 1.5)


@dataclass(frozen=True, slots=True)
class View:
    """What the player knows when it is about to request a chunk."""

    now_s: float
    buffer_s: float
    latency_s: float
    playing: bool  # playback has started and is not stalled
    level: int  # rung of the previous chunk (-1 before the first)


@dataclass(frozen=True, slots=True)
class Download:
    """A finished request."""

    level: int
    size_bytes: int
    request_s: float  # when it was sent
    first_byte_s: float
    done_s: float
    test: bool = False  # hls.js's start-up bitrate test: fetched, not buffered


@dataclass(frozen=True, slots=True)
class Progress:
    """A request in flight, polled every `POLL_S`."""

    level: int
    loaded_bytes: float
    total_bytes: int
    request_s: float
    first_byte_s: float | None
    now_s: float
    buffer_s: float
    playing: bool
    index: int  # chunk number


class Controller(Protocol):
    """A rung chooser in the simulator. Levels are indices into the ascending ladder."""

    def choose(self, view: View) -> int: ...

    def downloaded(self, download: Download, view: View) -> None: ...

    def abandon(self, progress: Progress) -> int | None: ...

    def delay_s(self) -> float: ...  # wait before the request just chosen (BOLA)

    def stalled(self) -> None: ...  # the buffer ran dry

    def bitrate_test(self) -> bool: ...  # fetch one chunk of the lowest rung first (hls.js)


@dataclass(slots=True)
class Session:
    """One controller on one trace: what the figures are computed from."""

    chunk_s: float
    bitrate_mbps_s: float = 0.0  # Σ nominal Mbps x media seconds
    switch_mbps: float = 0.0  # Σ |Δ nominal Mbps| between consecutive chunks
    switches: int = 0
    rebuffer_s: float = 0.0
    media_s: float = 0.0
    latency_integral: float = 0.0  # ∫ latency dt over the watched wall time
    watched_s: float = 0.0
    startup_s: float = 0.0
    abandoned: int = 0
    levels: list[int] = field(default_factory=list)  # rung of each chunk
    requests_s: list[float] = field(default_factory=list)  # when each chunk was asked for

    def qoe(self, rebuffer_weight: float = 4.3, switch_weight: float = 1.0) -> float:
        """QoE_lin per 2 s of media: Σ bitrate_Mbps - 4.3 x rebuffer_s - 1 x |Δbitrate_Mbps|,
        bitrate counted per 2 s of media whatever the chunk length, / number of 2 s steps."""
        steps = self.media_s / 2.0
        total = self.bitrate_mbps_s / 2.0
        total -= rebuffer_weight * self.rebuffer_s + switch_weight * self.switch_mbps
        return total / steps

    def figures(self) -> dict[str, float]:
        """The issue's five figures, then two more for the report: the start-up time, and
        the frozen ratio that counts it (the issue's rebuffer ratio does not: a slow first
        chunk freezes nothing on screen yet, but it is time the viewer waits)."""
        minutes = self.media_s / 60.0
        frozen_s = self.rebuffer_s + self.startup_s
        return {
            "qoe": self.qoe(),
            "bitrate_kbps": 1000.0 * self.bitrate_mbps_s / self.media_s,
            "rebuffer_ratio": self.rebuffer_s / (self.media_s + self.rebuffer_s),
            "switches_per_min": self.switches / minutes,
            "latency_s": self.latency_integral / self.watched_s if self.watched_s else 0.0,
            "startup_s": self.startup_s,
            "frozen_ratio": frozen_s / (self.media_s + frozen_s),
        }


class Player:
    """Plays one session: `run()` drives the controller chunk by chunk over the trace."""

    def __init__(
        self,
        media: Media,
        trace: Trace,
        regime: Regime,
        controller: Controller,
        session_s: float,
    ) -> None:
        self.media = media
        self.trace = trace
        self.regime = regime
        self.controller = controller
        self.chunks = math.ceil(session_s / regime.chunk_s)
        self.first = round((JOIN_S - regime.target_latency_s) / regime.chunk_s)
        self.session = Session(regime.chunk_s)
        self.now = JOIN_S
        self.started = False
        self.playing = False
        self.play_pos = self.first * regime.chunk_s  # media time of the playhead
        self.buffer_end = self.play_pos  # media time downloaded up to
        self.level = -1  # rung of the last chunk fetched

    # -- playback clock ---------------------------------------------------------------

    def latency(self) -> float:
        return self.now - self.play_pos

    def buffer(self) -> float:
        return self.buffer_end - self.play_pos

    def advance(self, t: float) -> None:
        """Let the playhead run until wall time `t`, stalling if the buffer empties."""
        if t <= self.now:
            return
        span = t - self.now
        if not self.started:
            self.now = t
            return
        session = self.session
        latency = self.latency()
        if self.playing:
            play = min(span, self.buffer())
            session.latency_integral += latency * play
            self.play_pos += play
            stall = span - play
            if stall > 0:
                self.playing = False
                self.controller.stalled()
        else:
            stall = span
        if stall > 0:  # latency holds while playing, then grows linearly while frozen
            session.rebuffer_s += stall
            session.latency_integral += (latency + stall / 2) * stall
        session.watched_s += span
        self.now = t

    def view(self) -> View:
        return View(self.now, self.buffer(), self.latency(), self.playing, self.level)

    # -- network ----------------------------------------------------------------------

    def fetch(self, index: int, level: int, test: bool = False) -> tuple[int, Download]:
        """Request chunk `index` at `level` now; poll the controller while it downloads.
        Returns the rung actually delivered and its download (the controller may abandon)."""
        parts = self.regime.parts
        while True:
            size = self.media.chunk_bytes(level, index, parts)
            if test and parts:  # hls.js's bitrate test loads the whole segment
                per = round(self.media.segment_s / self.media.part_s)
                size = self.media.chunk_bytes(level, index // per, parts=False)
            request = self.now
            if level != self.level and self.level >= 0 and not test:
                request += self.trace.rtt_at(request)  # the new rung's media playlist
            first_byte = request + self.trace.rtt_at(request)
            done = self.trace.time_for(self.trace.bits_by(first_byte) + size * 8.0)
            switched = self._poll(index, level, size, request, first_byte, done, test)
            if switched is None:
                self.advance(done)
                return level, Download(level, size, request, first_byte, done, test)
            self.session.abandoned += 1
            level = switched

    def _poll(
        self,
        index: int,
        level: int,
        size: int,
        request: float,
        first_byte: float,
        done: float,
        test: bool,
    ) -> int | None:
        if test or level == 0:
            return None
        t = self.now + POLL_S
        base_bits = self.trace.bits_by(first_byte)
        while t < done:
            self.advance(t)
            loaded = max(0.0, self.trace.bits_by(t) - base_bits) / 8.0 if t > first_byte else 0.0
            progress = Progress(
                level,
                min(loaded, float(size)),
                size,
                request,
                first_byte if t >= first_byte else None,
                t,
                self.buffer(),
                self.playing,
                index,
            )
            lower = self.controller.abandon(progress)
            if lower is not None and lower < level:
                return lower
            t += POLL_S
        return None

    # -- the session --------------------------------------------------------------------

    def run(self) -> Session:
        chunk_s = self.regime.chunk_s
        session = self.session
        if self.controller.bitrate_test():
            _, download = self.fetch(self.first, 0, test=True)
            self.controller.downloaded(download, self.view())
        cap_s = max(self.regime.target_latency_s, chunk_s)
        for index in range(self.first, self.first + self.chunks):
            available = (index + 1) * chunk_s
            room = self.now + max(0.0, self.buffer() + chunk_s - cap_s) if self.playing else 0
            self.advance(max(self.now, available, room))
            level = self.controller.choose(self.view())
            wait = self.controller.delay_s()
            if wait > 0:
                self.advance(self.now + wait)
            level, download = self.fetch(index, level)
            session.requests_s.append(download.request_s)
            self.buffer_end += chunk_s
            if not self.started:
                self.started = True
                session.startup_s = self.now - JOIN_S
            self.playing = True
            self.record(level)
            self.level = level
            self.controller.downloaded(download, self.view())
        # play out what is buffered, so every chunk's media is watched
        self.advance(self.now + self.buffer())
        return session

    def record(self, level: int) -> None:
        session = self.session
        mbps = self.media.rungs[level].nominal_bps / 1e6
        session.bitrate_mbps_s += mbps * self.regime.chunk_s
        session.media_s += self.regime.chunk_s
        if self.level >= 0 and level != self.level:
            session.switches += 1
            session.switch_mbps += abs(mbps - self.media.rungs[self.level].nominal_bps / 1e6)
        session.levels.append(level)


ControllerFactory = Callable[[Media, Regime], Controller]


def simulate(
    media: Media,
    trace: Trace,
    regime: Regime,
    factory: ControllerFactory,
    session_s: float,
) -> Session:
    return Player(media, trace, regime, factory(media, regime), session_s).run()
