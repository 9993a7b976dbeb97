"""Domain objects ↔ Avro records, for the events whose shape the domain owns."""

from __future__ import annotations

from typing import Any

from pipeline.gop import Gop
from pipeline.media import CodecConfig, MediaUnit, Track

_TRACKS = {Track.VIDEO: "VIDEO", Track.AUDIO: "AUDIO"}
_FROM_TRACK = {v: k for k, v in _TRACKS.items()}


def gop_to_record(
    gop: Gop,
    *,
    channel: str,
    ingest_time_ms: int,
    part_index: int = 0,
    last_part: bool = True,
) -> dict[str, Any]:
    """A whole GOP, or one part of it (`gop.units` = the part's units; a part that is not the
    last has duration 0: the GOP's length is known when the next keyframe arrives)."""
    config = gop.config
    return {
        "stream_id": gop.stream_id,
        "channel": channel,
        "sequence": gop.sequence,
        "part_index": part_index,
        "last_part": last_part,
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


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts of one GOP (in order, the last with `last_part`) → the whole-GOP record."""
    first, last = parts[0], parts[-1]
    return {
        **last,
        "part_index": 0,
        "last_part": True,
        "start_pts_90k": first["start_pts_90k"],
        "packets": [packet for part in parts for packet in part["packets"]],
    }


class PartAssembler:
    """Feed a stream's chunks in order; get whole GOPs back (a whole-GOP chunk at once, a GOP
    sent in parts when its last part arrives; parts whose first part is missing are dropped)."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], list[dict[str, Any]]] = {}

    def add(self, record: dict[str, Any]) -> dict[str, Any] | None:
        if record["part_index"] == 0 and record["last_part"]:
            return record
        key = (record["stream_id"], record["sequence"])
        if record["part_index"] == 0:
            self._parts[key] = []
        parts = self._parts.get(key)
        if parts is None or len(parts) != record["part_index"]:
            self._parts.pop(key, None)
            return None
        parts.append(record)
        if not record["last_part"]:
            return None
        del self._parts[key]
        return merge_parts(parts)
