"""FLV tags → onair's `CodecConfig` and `MediaUnit`s (the RTMP translation layer).

As in MediaMTX's `to_stream.go`, this is the one place that knows both the FLV shapes and the
internal unit. Rules:

- Timestamps: RTMP carries wrapping milliseconds (32 bits; 31 from ffmpeg); those of media
  frames are unwrapped (sequence headers, sent at 0, are left out) and scaled to 90 kHz.
  dts = tag time, pts = dts + composition time.
- Nothing leaves before the first video keyframe that follows an AVC sequence header.
  A `CodecConfig` comes out first: the raw avcC, the raw AudioSpecificConfig if an AAC header
  arrived by then (encoders send it right after the video one), the size from the SPS and the
  frame rate from onMetaData (`framerate` / `videoframerate`); without those, the first units
  are held until a few video DTS deltas give an estimate.
- A later sequence header that changes the config yields a new `CodecConfig` before the next
  unit; one that repeats it yields nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from gateway.rtmp.flv import (
    AacFrame,
    AacSequenceHeader,
    AvcNalus,
    AvcSequenceHeader,
    parse_audio_tag,
    parse_video_tag,
)
from pipeline.media import CodecConfig, MediaUnit, Track
from pipeline.timebase import ms_to_90k

logger = logging.getLogger(__name__)

Output = CodecConfig | MediaUnit

FPS_PROBE_FRAMES = 8  # video frames held to estimate the frame rate without metadata
MAX_HELD_UNITS = 256  # give up waiting for the probe after this many units (audio-heavy start)
FALLBACK_FPS = 30.0
MAX_FPS = 1000.0  # no source is faster; a larger figure is a broken clock or metadata
COMMON_FPS = (24.0, 25.0, 30.0, 48.0, 50.0, 60.0, 90.0, 120.0)
SNAP_TOLERANCE = 0.02


class TimestampUnwrapper:
    """Wrapping RTMP milliseconds → a continuous int.

    The spec's timestamps are 32-bit, but ffmpeg's FLV muxer masks them to 31 bits, so the
    modulus is 2^31 until a value at or above 2^31 shows the sender uses all 32. Each step is
    read as the shortest way around the circle (forward or back), so a late packet from just
    before a wrap lands just before it.
    """

    def __init__(self) -> None:
        self._last_raw: int | None = None
        self._modulus = 1 << 31
        self._value = 0

    def unwrap(self, raw_ms: int) -> int:
        raw_ms &= 0xFFFFFFFF
        if raw_ms >= 1 << 31:
            self._modulus = 1 << 32
        if self._last_raw is None:
            self._value = raw_ms
        else:
            half = self._modulus >> 1
            self._value += (raw_ms - self._last_raw + half) % self._modulus - half
        self._last_raw = raw_ms
        return self._value


def metadata_fps(metadata: Mapping[str, object]) -> float | None:
    for key in ("framerate", "videoframerate"):
        value = metadata.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            fps = float(value)
            if math.isfinite(fps) and 0 < fps <= MAX_FPS:
                return fps
    return None


def estimate_fps(dts_ms: list[int]) -> float:
    """Frame rate from video DTS values in ms, snapped to a common rate when close to one.

    Millisecond timestamps cannot tell 30 from 29.97 over a few frames, so the integer rates
    win; encoders that use NTSC rates say so in onMetaData. An estimate outside what
    onMetaData may say (0 < fps <= 1000) falls back too: a publisher's timestamps can jump
    by hours (two frames 2^24 ms apart rounded to 0.0 fps, found by fuzzing) or repeat.
    """
    if len(dts_ms) < 2 or dts_ms[-1] <= dts_ms[0]:
        return FALLBACK_FPS
    fps = (len(dts_ms) - 1) * 1000 / (dts_ms[-1] - dts_ms[0])
    nearest = min(COMMON_FPS, key=lambda common: abs(fps - common))
    if abs(fps - nearest) <= nearest * SNAP_TOLERANCE:
        return nearest
    fps = round(fps, 2)
    return fps if 0 < fps <= MAX_FPS else FALLBACK_FPS


class FlvToMedia:
    """Feed video/audio tag bodies with their RTMP timestamps; get configs and units back."""

    def __init__(self, *, fps_probe_frames: int = FPS_PROBE_FRAMES) -> None:
        self.fps_probe_frames = fps_probe_frames
        self.config: CodecConfig | None = None  # the last config handed out
        self.dropped_units = 0  # before any config or first keyframe, or empty
        self._clock = TimestampUnwrapper()
        self._avc: AvcSequenceHeader | None = None
        self._aac: AacSequenceHeader | None = None
        self._metadata_fps: float | None = None
        self._started = False  # a keyframe after the AVC header has been seen
        self._held: list[MediaUnit] = []
        self._probe_dts_ms: list[int] = []

    def set_metadata(self, metadata: Mapping[str, object]) -> None:
        fps = metadata_fps(metadata)
        if fps is not None:
            self._metadata_fps = fps

    def video(self, timestamp_ms: int, body: bytes) -> list[Output]:
        tag = parse_video_tag(body)
        if isinstance(tag, AvcSequenceHeader):
            self._avc = tag
            return self._config_changed()
        if not isinstance(tag, AvcNalus):
            return []  # end of sequence, info frames
        if self._avc is None or not tag.data or not (self._started or tag.keyframe):
            self.dropped_units += 1
            return []
        self._started = True
        dts_ms = self._clock.unwrap(timestamp_ms)
        pts_ms = dts_ms + tag.composition_time_ms
        unit = MediaUnit(Track.VIDEO, ms_to_90k(pts_ms), ms_to_90k(dts_ms), tag.keyframe, tag.data)
        if self.config is not None:
            return [unit]
        self._held.append(unit)
        self._probe_dts_ms.append(dts_ms)
        if self._metadata_fps is not None or len(self._probe_dts_ms) >= self.fps_probe_frames:
            return self._release()
        return []

    def audio(self, timestamp_ms: int, body: bytes) -> list[Output]:
        tag = parse_audio_tag(body)
        if isinstance(tag, AacSequenceHeader):
            self._aac = tag
            return self._config_changed()
        assert isinstance(tag, AacFrame)
        if self._aac is None or not self._started or not tag.data:
            self.dropped_units += 1
            return []
        dts_90k = ms_to_90k(self._clock.unwrap(timestamp_ms))
        unit = MediaUnit(Track.AUDIO, dts_90k, dts_90k, True, tag.data)
        if self.config is not None:
            return [unit]
        self._held.append(unit)
        if len(self._held) >= MAX_HELD_UNITS:
            return self._release()
        return []

    def flush(self) -> list[Output]:
        """The stream ends: hand out whatever is held."""
        if self.config is None and self._held:
            return self._release()
        return []

    # -- internals ---------------------------------------------------------------------------

    def _build_config(self, fps: float) -> CodecConfig:
        assert self._avc is not None
        sps = self._avc.sps
        aac = self._aac
        return CodecConfig(
            avc_config=self._avc.record,
            aac_config=aac.config if aac else None,
            width=sps.width,
            height=sps.height,
            fps=fps,
            audio_sample_rate=aac.info.sample_rate if aac else 0,
            audio_channels=aac.info.channels if aac else 0,
        )

    def _config_changed(self) -> list[Output]:
        if self.config is None or self._avc is None:
            return []  # not handed out yet: the first keyframe will
        config = self._build_config(self.config.fps)
        if config == self.config:
            return []
        self.config = config
        return [config]

    def _release(self) -> list[Output]:
        fps = self._metadata_fps
        if fps is None:
            fps = estimate_fps(self._probe_dts_ms)
        self.config = self._build_config(fps)
        out: list[Output] = [self.config, *self._held]
        self._held.clear()
        self._probe_dts_ms.clear()
        return out
