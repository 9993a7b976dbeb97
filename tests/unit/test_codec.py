from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import CorruptPayloadError, UnknownSchemaError
from schemas.codec import SCHEMA_DIR, Codec, Schema, crc64_avro, load_previous, load_schemas

SAMPLES: dict[str, dict[str, Any]] = {
    "DeadLetter": {
        "group": "onair.transcode.720p30",
        "topic": "onair.ingest.gops",
        "partition": 3,
        "offset": 1234,
        "key": b"demo-1",
        "value": b"\xc3\x01payload",
        "error": "KeyError: 'packets'",
        "attempts": 3,
        "failed_ms": 1_700_000_000_000,
    },
    "GopChunk": {
        "stream_id": "demo-1",
        "channel": "demo",
        "sequence": 7,
        "video_config": b"\x01\x64\x00\x1f",
        "audio_config": b"\x12\x10",
        "width": 1280,
        "height": 720,
        "fps": 30.0,
        "start_pts_90k": 1_260_000,
        "duration_90k": 180_000,
        "ingest_time_ms": 1,
        "packets": [
            {"track": "VIDEO", "pts_90k": 1, "dts_90k": 0, "keyframe": True, "data": b"\0\0"},
            {"track": "AUDIO", "pts_90k": 2, "dts_90k": 2, "keyframe": True, "data": b"\1"},
        ],
    },
    "SegmentReady": {
        "stream_id": "demo-1",
        "channel": "demo",
        "rendition": "720p30",
        "sequence": 7,
        "key": "streams/demo-1/720p30/000007.ts",
        "start_pts_90k": 1,
        "duration_90k": 180_000,
        "size_bytes": 10,
        "bitrate_bps": 40,
        "width": 1280,
        "height": 720,
        "fps": 30.0,
        "codecs": "avc1.64001f,mp4a.40.2",
        "program_date_time_ms": 5,
        "ingest_time_ms": 4,
        "renditions": ["720p30", "480p30"],
        "cmaf_key": "streams/demo-1/720p30/000007.m4s",
        "init_key": "streams/demo-1/720p30/init-0123456789abcdef.mp4",
    },
    "PartReady": {
        "stream_id": "demo-1",
        "channel": "demo",
        "rendition": "720p30",
        "renditions": ["720p30", "480p30"],
        "sequence": 7,
        "part": 3,
        "key": "streams/demo-1/720p30/000007.3.m4s",
        "init_key": "streams/demo-1/720p30/init-0123456789abcdef.mp4",
        "start_pts_90k": 135_000,
        "duration_90k": 45_000,
        "independent": False,
        "program_date_time_ms": 5,
        "ingest_time_ms": 4,
        "last": True,
        "segment_key": "streams/demo-1/720p30/000007.m4s",
        "segment_duration_90k": 180_000,
    },
    "StreamStarted": {
        "stream_id": "s",
        "channel": "demo",
        "started_ms": 1,
        "width": 1280,
        "height": 720,
        "fps": 30.0,
        "renditions": ["720p30"],
    },
    "StreamResumed": {"stream_id": "s", "channel": "demo", "resumed_ms": 1, "next_sequence": 3},
    "StreamInterrupted": {
        "stream_id": "s",
        "channel": "demo",
        "interrupted_ms": 1,
        "next_sequence": 3,
        "grace_ms": 5000,
        "started_ms": 0,
        "reason": "connection lost",
    },
    "StreamUpdated": {"stream_id": "s", "channel": "demo", "updated_ms": 1, "title": "hi"},
    "StreamEnded": {
        "stream_id": "s",
        "channel": "demo",
        "ended_ms": 2,
        "reason": "unpublish",
        "last_sequence": 9,
    },
    "ChatMessage": {"id": "m1", "channel": "demo", "user": "ann", "text": "hé 👋", "sent_ms": 3},
    "ModerationAction": {
        "channel": "demo",
        "action": "BAN",
        "user": "troll",
        "moderator": "mod",
        "created_ms": 1,
    },
    "Channel": {
        "name": "demo",
        "stream_key_hash": "ab" * 32,
        "key_version": 1,
        "created_ms": 1,
        "updated_ms": 1,
    },
    "IngestLease": {
        "channel": "demo",
        "kind": "RELEASE",
        "lease_id": "9f2c",
        "holder": "host-ingest-7-ab12",
        "stream_id": "demo-20261126T043000Z-9f2c",
        "ttl_ms": 30_000,
        "grace_ms": 5_000,
        "resume": False,
        "outcome": "INTERRUPTED",
        "started_ms": 1,
        "next_sequence": 12,
        "gops_partition": 3,
        "gops_first_offset": 100,
        "gops_last_offset": 140,
        "reason": "publisher went away",
        "written_ms": 2,
    },
    "Vod": {
        "stream_id": "s",
        "channel": "demo",
        "started_ms": 1,
        "ended_ms": 2,
        "duration_ms": 1,
        "renditions": ["720p30"],
        "segment_count": 1,
        "master": "vod/s/master.m3u8",
    },
}


def test_every_schema_has_a_sample() -> None:
    assert set(load_schemas()) == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES), ids=sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    codec = Codec()
    data = codec.encode(name, SAMPLES[name])
    assert data[:2] == b"\xc3\x01"
    decoded_name, record = codec.decode(data)
    assert decoded_name == name
    for key, value in SAMPLES[name].items():
        assert record[key] == value


def test_crc64_avro_matches_the_spec_vector() -> None:
    # org.apache.avro.SchemaNormalization.parsingFingerprint64(Schema.create(INT))
    assert crc64_avro(b'"int"') == 8247732601305521295


def _evolved(codec: Codec) -> dict[str, Schema]:
    raw = json.loads((SCHEMA_DIR / "ChatMessage.avsc").read_text())
    raw["fields"].append({"name": "color", "type": ["null", "string"], "default": None})
    schemas = dict(codec.schemas)
    schemas["ChatMessage"] = Schema.from_json(raw)
    return schemas


def test_optional_field_added_is_readable_old_to_new_and_new_to_old() -> None:
    old = Codec()
    new_schemas = _evolved(old)
    registry = {s.fingerprint: s.canonical for s in [*old.schemas.values(), *new_schemas.values()]}
    new = Codec(new_schemas, resolver=registry.get)
    old_reader = Codec(resolver=registry.get)

    _, from_old = new.decode(old.encode("ChatMessage", SAMPLES["ChatMessage"]))
    assert from_old["color"] is None and from_old["text"] == "hé 👋"

    record = {**SAMPLES["ChatMessage"], "color": "red"}
    _, from_new = old_reader.decode(new.encode("ChatMessage", record))
    assert "color" not in from_new and from_new["user"] == "ann"


def test_unknown_fingerprint_without_resolver_is_a_clear_error() -> None:
    new = Codec(_evolved(Codec()))
    data = new.encode("ChatMessage", {**SAMPLES["ChatMessage"], "color": None})
    with pytest.raises(UnknownSchemaError, match="unknown schema fingerprint"):
        Codec().decode(data)


@pytest.mark.parametrize(
    "data",
    [None, b"", b"\xc3", b"{}", b"\xc3\x01" + b"\0" * 8, b"\xc3\x02" + b"\0" * 12],
    ids=["none", "empty", "short", "json", "unknown-fp", "bad-magic"],
)
def test_garbage_header(data: bytes | None) -> None:
    with pytest.raises((CorruptPayloadError, UnknownSchemaError)):
        Codec().decode(data)


def test_truncated_and_padded_bodies_are_corrupt() -> None:
    codec = Codec()
    data = codec.encode("ChatMessage", SAMPLES["ChatMessage"])
    with pytest.raises(CorruptPayloadError):
        codec.decode(data[:-3])
    with pytest.raises(CorruptPayloadError):
        codec.decode(data + b"\0")


@given(st.binary(max_size=200))
def test_fuzzed_bodies_only_raise_codec_errors(body: bytes) -> None:
    codec = Codec()
    for schema in codec.schemas.values():
        with contextlib.suppress(CorruptPayloadError):
            codec.decode(b"\xc3\x01" + schema.fingerprint + body)


def test_records_written_with_a_previous_version_still_decode() -> None:
    """SegmentReady gained `cmaf_key`/`init_key`: a record its version 1 wrote (still in the
    segments topic after an upgrade; the VOD reads a stream's whole history) decodes, the new
    fields at their defaults, with no resolver."""
    v1 = next(s for s in load_previous() if s.short_name == "SegmentReady")
    current = Codec()
    assert v1.fingerprint != current.schemas["SegmentReady"].fingerprint
    old = Codec({"SegmentReady": v1})
    record = {k: v for k, v in SAMPLES["SegmentReady"].items() if k not in ("cmaf_key", "init_key")}
    name, decoded = current.decode(old.encode("SegmentReady", record))
    assert name == "SegmentReady"
    assert decoded["cmaf_key"] == "" and decoded["init_key"] == ""
    assert decoded["key"] == record["key"] and decoded["sequence"] == record["sequence"]
