"""The transcode core's CMAF output (low-latency HLS): parts cut as the encoder produces them,
each durable before its PartReady record, the whole segment equal to its parts back to back,
and every object decodable by ffprobe with the init segment in front."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from objectstore.local import LocalStore
from pipeline.errors import StoreError
from pipeline.gop import Gop
from pipeline.ladder import DEFAULT_LADDER, Ladder
from schemas.codec import Codec
from schemas.records import gop_to_record
from tests.mediafixtures import cached_flv, gops_from_flv
from tests.unit.test_transcode_parts import FlakyStore
from workers.transcode.core import RungTranscoder

LADDER = Ladder.parse(DEFAULT_LADDER)
PART_TARGET_90K = 45_000  # 0.5 s


@pytest.fixture(scope="module")
def gops(tmp_path_factory: pytest.TempPathFactory) -> list[Gop]:
    media = tmp_path_factory.mktemp("cmaf")
    return gops_from_flv(cached_flv(media, 4.0, size="640x360"), "cmaf")


def _chunks(gop: Gop, size: int) -> list[dict[str, Any]]:
    chunks = [gop.units[i : i + size] for i in range(0, len(gop.units), size)]
    return [
        gop_to_record(
            replace(gop, units=units, duration_90k=gop.duration_90k if last else 0),
            channel="c",
            ingest_time_ms=1_000_000 + 100 * index,
            part_index=index,
            last_part=last,
        )
        for index, units in enumerate(chunks)
        for last in [index == len(chunks) - 1]
    ]


def _transcoder(store: LocalStore, parts: list[dict[str, Any]]) -> RungTranscoder:
    def on_part(record: dict[str, Any]) -> None:
        for key in (record["key"], record["init_key"], record["segment_key"]):
            assert not key or store.exists(key), f"{key} announced before it was stored"
        Codec().encode("PartReady", record)  # the record fits its schema
        parts.append(record)

    return RungTranscoder(
        LADDER.get("360p30"), LADDER, store, part_target_90k=PART_TARGET_90K, on_part=on_part
    )


def _probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-count_frames", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_parts_are_stored_announced_and_decode(gops: list[Gop], tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    parts: list[dict[str, Any]] = []
    transcoder = _transcoder(store, parts)
    chunks = _chunks(gops[0], 8)
    announced_before_last = []
    events = []
    for n, chunk in enumerate(chunks):
        events.append(transcoder.process(chunk, position=(0, n)))
        if not chunk["last_part"]:
            announced_before_last.append(len(parts))
    # the segment's SegmentReady names the CMAF segment and its init (the VOD reads them),
    # both stored before the record is returned
    assert events[:-1] == [None] * (len(chunks) - 1)
    event = events[-1]
    assert event is not None and event["key"].endswith("000000.ts")
    assert (
        event["cmaf_key"] == parts[-1]["segment_key"] and event["init_key"] == parts[0]["init_key"]
    )
    assert store.exists(event["cmaf_key"]) and store.exists(event["init_key"])
    Codec().encode("SegmentReady", event)
    assert announced_before_last[-1] >= 2, "parts must go out while the GOP still arrives"
    assert [p["part"] for p in parts] == list(range(len(parts)))
    assert parts[0]["independent"] and not any(p["independent"] for p in parts[1:])
    assert [p["last"] for p in parts] == [False] * (len(parts) - 1) + [True]
    for p in parts[:-1]:
        assert 0.85 * PART_TARGET_90K <= p["duration_90k"] <= PART_TARGET_90K
    assert parts[-1]["duration_90k"] <= PART_TARGET_90K
    total = sum(p["duration_90k"] for p in parts)
    assert total == parts[-1]["segment_duration_90k"]
    assert abs(total - gops[0].duration_90k) <= 3_000
    assert parts[0]["program_date_time_ms"] < 1_000_000
    assert parts[0]["codecs"].startswith("avc1.") and ",mp4a.40.2" in parts[0]["codecs"]

    init = store.get(parts[0]["init_key"]).body
    whole = store.get(parts[-1]["segment_key"]).body
    assert whole == b"".join(store.get(p["key"]).body for p in parts)
    (tmp_path / "whole.mp4").write_bytes(init + whole)
    streams = {s["codec_type"]: s for s in _probe(tmp_path / "whole.mp4")["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["height"] == 360
    assert int(streams["video"]["nb_read_frames"]) == 60  # 2 s at 30 fps
    assert streams["audio"]["codec_name"] == "aac"
    (tmp_path / "part.mp4").write_bytes(init + store.get(parts[0]["key"]).body)
    first = {s["codec_type"]: s for s in _probe(tmp_path / "part.mp4")["streams"]}
    # 15 frames of 1/30 s on the frame grid, though RTMP's milliseconds step 33, 33, 34 ms
    assert int(first["video"]["nb_read_frames"]) == 15
    assert [p["duration_90k"] for p in parts] == [45_000] * 4


def test_a_whole_gop_gives_the_same_parts_as_its_chunks(gops: list[Gop], tmp_path: Path) -> None:
    whole_parts: list[dict[str, Any]] = []
    store = LocalStore(tmp_path / "whole")
    event = _transcoder(store, whole_parts).process(
        gop_to_record(gops[1], channel="c", ingest_time_ms=1)
    )
    assert event is not None and event["cmaf_key"] == whole_parts[-1]["segment_key"]
    assert event["init_key"] == whole_parts[0]["init_key"]
    without = RungTranscoder(LADDER.get("360p30"), LADDER, LocalStore(tmp_path / "ts"))
    only_ts = without.process(gop_to_record(gops[1], channel="c", ingest_time_ms=1))
    assert only_ts is not None and (only_ts["cmaf_key"], only_ts["init_key"]) == ("", "")
    chunked: list[dict[str, Any]] = []
    other = LocalStore(tmp_path / "chunked")
    transcoder = _transcoder(other, chunked)
    for n, chunk in enumerate(_chunks(gops[1], 5)):
        transcoder.process(chunk, position=(0, n))
    strip = ("program_date_time_ms", "ingest_time_ms")
    assert [{k: v for k, v in p.items() if k not in strip} for p in whole_parts] == [
        {k: v for k, v in p.items() if k not in strip} for p in chunked
    ]
    # the bytes may differ where audio frames came after the video they go with (a chunk
    # later): they join the next part, and nothing is lost or doubled
    counts = []
    for name, found, parts in (("whole", store, whole_parts), ("chunked", other, chunked)):
        path = tmp_path / f"{name}.mp4"
        init = found.get(parts[0]["init_key"]).body
        path.write_bytes(init + found.get(parts[-1]["segment_key"]).body)
        streams = {s["codec_type"]: int(s["nb_read_frames"]) for s in _probe(path)["streams"]}
        counts.append(streams)
    assert counts[0] == counts[1] and counts[0]["video"] == 60


def test_a_gop_whose_last_part_went_out_early_is_completed_by_a_record(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A source without B-frames (OBS's x264 with tune=zerolatency): the last part is cut as
    soon as its last frame is encoded, before the chunk that says the GOP ended; that chunk
    then only completes the segment, announcing the same part again with `last`."""
    media = tmp_path_factory.mktemp("cmaf-nob")
    gops = gops_from_flv(cached_flv(media, 4.0, size="640x360", bframes=0), "nob")
    parts: list[dict[str, Any]] = []
    store = LocalStore(tmp_path / "s")
    transcoder = _transcoder(store, parts)
    gop = gops[0]
    video = [u for u in gop.units if u.track.value == "video"]
    cut = next(i for i, u in enumerate(gop.units) if u is video[-1]) + 1
    head, tail = replace(gop, units=gop.units[:cut]), replace(gop, units=gop.units[cut:])
    records = _chunks(head, len(head.units))
    records[0] = {**records[0], "last_part": False}
    last = gop_to_record(tail, channel="c", ingest_time_ms=2, part_index=1, last_part=True)
    transcoder.process(records[0], position=(0, 0))
    transcoder.process(last, position=(0, 1))
    assert not any(p["last"] for p in parts[:-1]) and [p["part"] for p in parts[:-1]] == [
        0,
        1,
        2,
        3,
    ]
    assert parts[-1]["last"] and parts[-1]["part"] == 3 and parts[-1]["key"] == parts[-2]["key"]
    assert parts[-1]["segment_duration_90k"] == 180_000
    assert store.exists(parts[-1]["segment_key"])


def test_the_end_of_a_stream_is_announced_on_parts(gops: list[Gop], tmp_path: Path) -> None:
    parts: list[dict[str, Any]] = []
    transcoder = _transcoder(LocalStore(tmp_path / "s"), parts)
    record = gop_to_record(gops[0], channel="c", ingest_time_ms=1)
    transcoder.process(record)
    marker = {**record, "end_of_stream": True, "sequence": gops[0].sequence + 1}
    transcoder.process(marker)
    assert parts[-1]["end_of_stream"] and parts[-1]["sequence"] == gops[0].sequence + 1


def test_a_store_failure_on_a_part_keeps_the_gop_for_the_retry(
    gops: list[Gop], tmp_path: Path
) -> None:
    """The store fails while a chunk's CMAF part is written: the worker tries the chunk
    again (as topics.deadletter does) and the GOP goes on — every part stored and announced
    once, in order, and the MPEG-TS segment written. Before, the failure dropped the open
    GOP: the rest of it was skipped and the rendition's classic playlist never ended."""
    store = FlakyStore(tmp_path / "flaky")
    parts: list[dict[str, Any]] = []
    transcoder = _transcoder(store, parts)  # type: ignore[arg-type]
    chunks = _chunks(gops[0], 8)
    segment, failed = None, []
    for n, chunk in enumerate(chunks):
        store.failures = 1  # the first write of every chunk fails once
        for _ in range(3):
            try:
                segment = transcoder.process(chunk, position=(0, n))
                break
            except StoreError:
                failed.append(n)
                assert transcoder.open_offsets(0) == [0], "the GOP still holds the commit"
        else:
            pytest.fail("the chunk never went through")
        store.failures = 0
    assert len(failed) >= 4 and failed[-1] == len(chunks) - 1  # parts mid-GOP, and the end
    assert segment is not None and store.exists(segment["key"])
    assert [p["part"] for p in parts] == list(range(len(parts))) and parts[-1]["last"]
    assert sum(p["duration_90k"] for p in parts) == parts[-1]["segment_duration_90k"]
    assert store.get(parts[-1]["segment_key"]).body == b"".join(
        store.get(p["key"]).body for p in parts
    )


def test_without_mpeg_ts_the_cmaf_segment_is_the_segment(gops: list[Gop], tmp_path: Path) -> None:
    """`ONAIR_TS_SEGMENTS=0`: no MPEG-TS muxed or stored; SegmentReady's key is the CMAF
    segment, its size and bitrate that segment's, so the classic playlists list it."""
    store = LocalStore(tmp_path / "store")
    parts: list[dict[str, Any]] = []
    transcoder = RungTranscoder(
        LADDER.get("360p30"),
        LADDER,
        store,
        part_target_90k=PART_TARGET_90K,
        on_part=parts.append,
        ts_segments=False,
    )
    events = [transcoder.process(c, position=(0, n)) for n, c in enumerate(_chunks(gops[0], 8))]
    event = events[-1]
    assert event is not None
    assert event["key"] == event["cmaf_key"] == parts[-1]["segment_key"]
    whole = store.get(event["key"]).body
    assert event["size_bytes"] == len(whole)
    expected_bps = len(whole) * 8 * 90_000 / event["duration_90k"]
    assert abs(event["bitrate_bps"] - expected_bps) <= 1
    stored = store.list("streams/")
    assert event["key"] in stored and not [k for k in stored if k.endswith(".ts")]
    Codec().encode("SegmentReady", event)
    with pytest.raises(ValueError, match="needs CMAF parts"):
        RungTranscoder(LADDER.get("360p30"), LADDER, store, ts_segments=False)
