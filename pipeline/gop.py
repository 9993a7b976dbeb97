"""Cutting a stream of media units into GOPs: one GOP = one future HLS segment.

A GOP starts at a video keyframe and runs up to (not including) the next one. Audio frames
belong to the GOP whose time span holds their dts, so every GOP decodes on its own and
segment N of every rendition covers the same time.

A publisher decides where its keyframes are, so a GOP's length is bounded (`GopLimits`): one
that reaches `max_duration_ms`, or whose next unit would take it past `max_bytes` (payloads
plus a per-unit allowance for the record around them, so the whole GOP stays within the GOP
topic's message limit), is closed there with that `close_reason`. What follows up to the next
keyframe cannot be decoded alone: it is dropped (counted in `dropped_units`) and the next GOP
is marked as a discontinuity. With `release_parts` the units handed out by `take_part()` are
forgotten at once, so a publisher holds at most one part of its open GOP in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipeline.media import CodecConfig, MediaUnit, Track

logger = logging.getLogger(__name__)

UNIT_OVERHEAD_BYTES = 32  # a packet's fields around its payload in a GopChunk record (~26)
GOP_OVERHEAD_BYTES = 4096  # the record's own fields (ids, sizes, timestamps), config apart

KEYFRAME = "keyframe"  # the next keyframe arrived: the normal case
MAX_DURATION = "max_duration"
MAX_BYTES = "max_bytes"
END = "end"  # flush(): the stream ended


@dataclass(frozen=True, slots=True)
class GopLimits:
    max_duration_ms: int = 20_000  # ffmpeg's default keyint (250) at 12.5 fps and up fits
    max_bytes: int = 12 * 1024 * 1024  # under the GOP topic's 16 MiB a message, with room

    def __post_init__(self) -> None:
        if self.max_duration_ms < 1 or self.max_bytes < 1:
            raise ValueError("GOP limits must be positive")

    @property
    def max_duration_90k(self) -> int:
        return self.max_duration_ms * 90


@dataclass(frozen=True, slots=True)
class Gop:
    """Everything needed to turn one GOP into one segment of any rendition."""

    stream_id: str
    sequence: int
    config: CodecConfig
    units: tuple[MediaUnit, ...]  # video and audio, in dts order; first unit is a video keyframe
    start_pts_90k: int
    duration_90k: int
    discontinuity: bool = False  # timestamps do not continue from the previous GOP
    close_reason: str = KEYFRAME  # KEYFRAME, MAX_DURATION, MAX_BYTES or END

    @property
    def video(self) -> list[MediaUnit]:
        return [u for u in self.units if u.track is Track.VIDEO]

    @property
    def audio(self) -> list[MediaUnit]:
        return [u for u in self.units if u.track is Track.AUDIO]


def unit_cost(unit: MediaUnit) -> int:
    """What a unit adds to a GOP record, for `GopLimits.max_bytes`."""
    return len(unit.payload) + UNIT_OVERHEAD_BYTES


@dataclass(slots=True)
class GopCutter:
    """Feed media units in arrival order; get a `Gop` each time one closes (at the next
    keyframe, or at a limit).

    Units before the first keyframe are dropped (a decoder could not start there). `flush()`
    closes the last GOP at the end of the stream. With `release_parts`, a GOP closed after
    `take_part()` holds only the units not handed out yet (its last part), and `unsent()`
    returns them all; without, it holds every unit and `unsent()` picks the last part.
    """

    stream_id: str
    config: CodecConfig
    next_sequence: int = 0
    limits: GopLimits = field(default_factory=GopLimits)
    release_parts: bool = False
    dropped_units: int = 0  # dropped waiting for a keyframe (before the first, after a cut)
    _units: list[MediaUnit] = field(default_factory=list)
    _pending_audio: list[MediaUnit] = field(default_factory=list)
    _open: bool = False  # a GOP is being received (its units may all be handed out)
    _open_start_pts: int = 0
    _open_start_dts: int = 0
    _open_bytes: int = 0
    _last_video_dts: int | None = None
    _video_step_90k: int = 3000
    _discontinuity: bool = False
    _sent: set[int] = field(default_factory=set)  # ids of the open GOP's units sent in parts
    _closed_sent: set[int] = field(default_factory=set)
    _cuts: int = 0  # GOPs closed at a limit

    def mark_discontinuity(self) -> None:
        """The next GOP's timestamps do not continue from the last one (e.g. a reconnect)."""
        self._discontinuity = True

    def push(self, unit: MediaUnit) -> Gop | None:
        is_video = unit.track is Track.VIDEO
        starts_gop = is_video and unit.keyframe
        closed: Gop | None = None
        if self._open:
            if starts_gop:
                closed = self._close(end_dts_90k=unit.dts_90k, reason=KEYFRAME)
            else:
                reason = self._limit_reached(unit)
                if reason is not None:
                    closed = self._cut(reason)
        if is_video:
            if self._last_video_dts is not None and unit.dts_90k > self._last_video_dts:
                self._video_step_90k = unit.dts_90k - self._last_video_dts
            self._last_video_dts = unit.dts_90k
        if starts_gop and self._record_bytes + unit_cost(unit) <= self.limits.max_bytes:
            self._start(unit)
            # audio that arrived before this keyframe but belongs to its time span
            for audio in self._pending_audio:
                self._add(audio)
            self._pending_audio.clear()
        elif self._open:
            self._add(unit)
        else:  # before the first keyframe, after a cut, or a keyframe no GOP can hold
            self.dropped_units += 1
            if starts_gop:
                self._drop_pending_audio()
        return closed

    def take_part(self) -> list[MediaUnit]:
        """The open GOP's units not handed out yet, for sending the GOP in parts while it is
        still arriving: its video so far, and the audio up to the newest video frame (audio
        ahead of the video may still belong to the next GOP, so it waits for the close)."""
        if not self._open or self._last_video_dts is None:
            return []
        newest = self._last_video_dts
        part: list[MediaUnit] = []
        kept: list[MediaUnit] = []
        for u in self._units:
            if id(u) not in self._sent and (u.track is Track.VIDEO or u.dts_90k <= newest):
                part.append(u)
            else:
                kept.append(u)
        if self.release_parts:
            self._units = kept
        else:
            self._sent.update(id(u) for u in part)
        return part

    def unsent(self, gop: Gop) -> list[MediaUnit]:
        """Of the GOP just closed, the units `take_part()` did not hand out: its last part."""
        return [u for u in gop.units if id(u) not in self._closed_sent]

    @property
    def open_discontinuity(self) -> bool:
        return self._discontinuity

    @property
    def open_sequence(self) -> int | None:
        """The sequence number of the GOP being received, if any."""
        return self.next_sequence if self._open else None

    @property
    def held_bytes(self) -> int:
        """Payload bytes this cutter holds (the open GOP's units not released, pending audio)."""
        return sum(len(u.payload) for u in (*self._units, *self._pending_audio))

    def flush(self) -> Gop | None:
        if not self._open or self._last_video_dts is None:
            return None
        return self._close(end_dts_90k=self._last_video_dts + self._video_step_90k, reason=END)

    # -- internals ---------------------------------------------------------------------------

    @property
    def _record_bytes(self) -> int:
        """What a GOP record holds besides its units: fields and the codec configuration."""
        config = self.config
        return GOP_OVERHEAD_BYTES + len(config.avc_config) + len(config.aac_config or b"")

    def _start(self, keyframe: MediaUnit) -> None:
        self._open = True
        self._open_start_pts = keyframe.pts_90k
        self._open_start_dts = keyframe.dts_90k
        self._open_bytes = self._record_bytes
        self._add(keyframe)

    def _add(self, unit: MediaUnit) -> None:
        self._units.append(unit)
        self._open_bytes += unit_cost(unit)

    def _limit_reached(self, unit: MediaUnit) -> str | None:
        if unit.dts_90k - self._open_start_dts >= self.limits.max_duration_90k:
            return MAX_DURATION
        if self._open_bytes + unit_cost(unit) > self.limits.max_bytes:
            return MAX_BYTES
        return None

    def _cut(self, reason: str) -> Gop:
        """Close the open GOP at a limit, one frame after its newest video frame; what follows
        up to the next keyframe is dropped, and the next GOP is a discontinuity."""
        assert self._last_video_dts is not None  # a keyframe opened the GOP
        gop = self._close(self._last_video_dts + self._video_step_90k, reason)
        self._drop_pending_audio()
        self._discontinuity = True
        self._cuts += 1
        if self._cuts in (1, 10, 100) or self._cuts % 1000 == 0:  # a limited rate
            logger.warning(
                "stream %s: GOP %d closed at %s (%.1f s, %d units) without a next keyframe; "
                "dropping until one arrives (%d such cuts so far)",
                self.stream_id,
                gop.sequence,
                reason,
                gop.duration_90k / 90_000,
                len(gop.units),
                self._cuts,
            )
        return gop

    def _drop_pending_audio(self) -> None:
        self.dropped_units += len(self._pending_audio)
        self._pending_audio.clear()

    def _close(self, end_dts_90k: int, reason: str) -> Gop:
        inside = [u for u in self._units if u.track is Track.VIDEO or u.dts_90k < end_dts_90k]
        self._pending_audio = [
            u for u in self._units if u.track is Track.AUDIO and u.dts_90k >= end_dts_90k
        ]
        inside.sort(key=lambda u: (u.dts_90k, u.track is Track.AUDIO))
        gop = Gop(
            stream_id=self.stream_id,
            sequence=self.next_sequence,
            config=self.config,
            units=tuple(inside),
            start_pts_90k=self._open_start_pts,
            duration_90k=max(1, end_dts_90k - self._open_start_dts),
            discontinuity=self._discontinuity,
            close_reason=reason,
        )
        self.next_sequence += 1
        self._discontinuity = False
        self._units = []
        self._open = False
        self._open_bytes = 0
        self._closed_sent, self._sent = self._sent, set()
        return gop
