"""Cutting a stream of media units into GOPs: one GOP = one future HLS segment.

A GOP starts at a video keyframe and runs up to (not including) the next one. Audio frames
belong to the GOP whose time span holds their dts, so every GOP decodes on its own and
segment N of every rendition covers the same time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipeline.media import CodecConfig, MediaUnit, Track

logger = logging.getLogger(__name__)


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

    @property
    def video(self) -> list[MediaUnit]:
        return [u for u in self.units if u.track is Track.VIDEO]

    @property
    def audio(self) -> list[MediaUnit]:
        return [u for u in self.units if u.track is Track.AUDIO]


@dataclass(slots=True)
class GopCutter:
    """Feed media units in arrival order; get a `Gop` each time the next keyframe arrives.

    Units before the first keyframe are dropped (a decoder could not start there). `flush()`
    closes the last GOP at the end of the stream.
    """

    stream_id: str
    config: CodecConfig
    next_sequence: int = 0
    _units: list[MediaUnit] = field(default_factory=list)
    _pending_audio: list[MediaUnit] = field(default_factory=list)
    _last_video_dts: int | None = None
    _video_step_90k: int = 3000
    _discontinuity: bool = False
    _sent: set[int] = field(default_factory=set)  # ids of the open GOP's units sent in parts
    _closed_sent: set[int] = field(default_factory=set)

    def mark_discontinuity(self) -> None:
        """The next GOP's timestamps do not continue from the last one (e.g. a reconnect)."""
        self._discontinuity = True

    def push(self, unit: MediaUnit) -> Gop | None:
        if unit.track is Track.AUDIO:
            if self._units:
                self._units.append(unit)
            return None
        closed: Gop | None = None
        if unit.keyframe and self._units:
            closed = self._close(end_dts_90k=unit.dts_90k)
        if self._last_video_dts is not None and unit.dts_90k > self._last_video_dts:
            self._video_step_90k = unit.dts_90k - self._last_video_dts
        self._last_video_dts = unit.dts_90k
        if self._units or unit.keyframe:
            self._units.append(unit)
            if closed is not None:
                # audio that arrived before this keyframe but belongs to its time span
                self._units.extend(self._pending_audio)
                self._pending_audio.clear()
        return closed

    def take_part(self) -> list[MediaUnit]:
        """The open GOP's units not handed out yet, for sending the GOP in parts while it is
        still arriving: its video so far, and the audio up to the newest video frame (audio
        ahead of the video may still belong to the next GOP, so it waits for the close)."""
        if not self._units or self._last_video_dts is None:
            return []
        part = [
            u
            for u in self._units
            if id(u) not in self._sent
            and (u.track is Track.VIDEO or u.dts_90k <= self._last_video_dts)
        ]
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
        return self.next_sequence if self._units else None

    def flush(self) -> Gop | None:
        if not self._units or self._last_video_dts is None:
            return None
        return self._close(end_dts_90k=self._last_video_dts + self._video_step_90k)

    def _close(self, end_dts_90k: int) -> Gop:
        first = self._units[0]
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
            start_pts_90k=first.pts_90k,
            duration_90k=max(1, end_dts_90k - first.dts_90k),
            discontinuity=self._discontinuity,
        )
        self.next_sequence += 1
        self._discontinuity = False
        self._units = []
        self._closed_sent, self._sent = self._sent, set()
        return gop
