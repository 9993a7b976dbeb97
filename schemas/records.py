"""Domain objects ↔ Avro records, for the events whose shape the domain owns."""

from __future__ import annotations

from typing import Any

from pipeline.gop import Gop
from pipeline.media import CodecConfig, MediaUnit, Track

_TRACKS = {Track.VIDEO: "VIDEO", Track.AUDIO: "AUDIO"}
_FROM_TRACK = {v: k for k, v in _TRACKS.items()}


def gop_to_record(gop: Gop, *, channel: str, ingest_time_ms: int) -> dict[str, Any]:
    config = gop.config
    return {
        "stream_id": gop.stream_id,
        "channel": channel,
        "sequence": gop.sequence,
        "part_index": 0,
        "last_part": True,
        "discontinuity": gop.discontinuity,
        "video_config": config.avc_config,
        "audio_config": config.aac_config,
        "width": config.width,
        "height": config.height,
        "fps": config.fps,
        "audio_sample_rate": config.audio_sample_rate,
        "audio_channels": config.audio_channels,
        "start_pts_90k": gop.start_pts_90k,
        "duration_90k": gop.duration_90k,
        "ingest_time_ms": ingest_time_ms,
        "end_of_stream": False,
        "packets": [
            {
                "track": _TRACKS[u.track],
                "pts_90k": u.pts_90k,
                "dts_90k": u.dts_90k,
                "keyframe": u.keyframe,
                "data": u.payload,
            }
            for u in gop.units
        ],
    }


def end_of_stream_record(
    stream_id: str, channel: str, next_sequence: int, config: CodecConfig | None, now_ms: int
) -> dict[str, Any]:
    """The marker after a stream's last GOP: no packets, sequence = the last GOP's + 1."""
    return {
        "stream_id": stream_id,
        "channel": channel,
        "sequence": next_sequence,
        "video_config": config.avc_config if config else b"",
        "audio_config": config.aac_config if config else None,
        "width": config.width if config else 0,
        "height": config.height if config else 0,
        "fps": config.fps if config else 0.0,
        "start_pts_90k": 0,
        "duration_90k": 0,
        "ingest_time_ms": now_ms,
        "end_of_stream": True,
        "packets": [],
    }


def gop_from_record(record: dict[str, Any]) -> Gop:
    config = CodecConfig(
        avc_config=record["video_config"],
        aac_config=record["audio_config"],
        width=record["width"],
        height=record["height"],
        fps=record["fps"],
        audio_sample_rate=record["audio_sample_rate"],
        audio_channels=record["audio_channels"],
    )
    units = tuple(
        MediaUnit(_FROM_TRACK[p["track"]], p["pts_90k"], p["dts_90k"], p["keyframe"], p["data"])
        for p in record["packets"]
    )
    return Gop(
        stream_id=record["stream_id"],
        sequence=record["sequence"],
        config=config,
        units=units,
        start_pts_90k=record["start_pts_90k"],
        duration_90k=record["duration_90k"],
        discontinuity=record["discontinuity"],
    )
