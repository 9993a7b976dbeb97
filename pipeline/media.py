"""The one internal unit of media every stage passes around."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Track(StrEnum):
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class MediaUnit:
    """One access unit of one track.

    Video payloads are AVC access units in AVCC form (4-byte big-endian NAL lengths), exactly
    as FLV carries them; audio payloads are raw AAC frames (no ADTS header). Timestamps are in
    the 90 kHz clock.
    """

    track: Track
    pts_90k: int
    dts_90k: int
    keyframe: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class CodecConfig:
    """What a decoder needs before the first packet."""

    avc_config: bytes  # AVCDecoderConfigurationRecord (avcC)
    aac_config: bytes | None  # AudioSpecificConfig, None when the stream has no audio
    width: int
    height: int
    fps: float
    audio_sample_rate: int = 0
    audio_channels: int = 0
