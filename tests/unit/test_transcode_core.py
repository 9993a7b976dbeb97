"""The transcode core without Kafka: a ladder's rungs turn GopChunk records (whole GOPs or
their parts) into stored segments and SegmentReady records, one per rung that applies."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from objectstore.local import LocalStore
from pipeline.gop import Gop
from pipeline.ladder import DEFAULT_LADDER, Ladder
from pipeline.metrics import Registry
from schemas.codec import Codec
from schemas.records import end_of_stream_record, gop_to_record
from tests.mediafixtures import cached_flv, gops_from_flv
from workers.transcode.core import LadderTranscoder

LADDER = Ladder.parse(DEFAULT_LADDER)
RUNGS = ["360p30", "160p30"]  # what a 640x360 source gets: nothing above it


@pytest.fixture(scope="module")
def gops(tmp_path_factory: pytest.TempPathFactory) -> list[Gop]:
    media = tmp_path_factory.mktemp("core")
    return gops_from_flv(cached_flv(media, 4.0, size="640x360"), "core")


def _record(gop: Gop) -> dict[str, Any]:
    return gop_to_record(gop, channel="c", ingest_time_ms=1)


def _parts(gop: Gop, size: int) -> list[dict[str, Any]]:
    chunks = [gop.units[i : i + size] for i in range(0, len(gop.units), size)]
    return [
        gop_to_record(
            replace(gop, units=units, duration_90k=gop.duration_90k if last else 0),
            channel="c",
            ingest_time_ms=1,
            part_index=index,
            last_part=last,
        )
        for index, units in enumerate(chunks)
        for last in [index == len(chunks) - 1]
    ]


def test_a_gop_gives_one_stored_segment_per_rung_that_applies(
    gops: list[Gop], tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    registry = Registry()
    events = LadderTranscoder(LADDER, store, registry=registry).process(_record(gops[0]))
    assert [e["rendition"] for e in events] == RUNGS
    for event in events:
        assert event["renditions"] == RUNGS
        assert event["key"] == f"streams/core/{event['rendition']}/000000.ts"
        assert event["end_of_stream"] is False
        assert event["height"] == int(event["rendition"].split("p")[0])
        assert store.get(event["key"]).body[:1] == b"\x47"  # MPEG-TS
        assert event["size_bytes"] == len(store.get(event["key"]).body)
    text = registry.render()
    assert 'onair_transcode_segments_total{rendition="360p30"} 1' in text
    assert 'onair_transcode_skipped_total{rendition="1080p60"} 1' in text


def test_parts_give_nothing_until_the_last_then_the_whole_gops_segments(
    gops: list[Gop], tmp_path: Path
) -> None:
    whole = LadderTranscoder(LADDER, LocalStore(tmp_path / "whole")).process(_record(gops[1]))
    transcoder = LadderTranscoder(LADDER, LocalStore(tmp_path / "parts"))
    results = [
        transcoder.process(part, position=(0, n)) for n, part in enumerate(_parts(gops[1], 40))
    ]
    assert len(results) > 1
    assert results[:-1] == [[]] * (len(results) - 1)
    assert results[-1] == whole
    for event in whole:
        key = event["key"]
        assert (tmp_path / "parts" / key).read_bytes() == (tmp_path / "whole" / key).read_bytes()


def test_the_end_of_stream_marker_comes_out_of_every_rung(gops: list[Gop], tmp_path: Path) -> None:
    transcoder = LadderTranscoder(LADDER, LocalStore(tmp_path / "store"))
    codec = Codec()  # through the wire format, which fills in the marker's defaults
    marker = end_of_stream_record("core", "c", len(gops), gops[0].config, 0)
    marker = codec.expect("GopChunk", codec.encode("GopChunk", marker))
    events = transcoder.process(marker)
    assert [(e["rendition"], e["sequence"], e["end_of_stream"], e["key"]) for e in events] == [
        (rung, len(gops), True, "") for rung in RUNGS
    ]
    assert not (tmp_path / "store" / "streams").exists()
