"""The ABR bench's media (bench/abr_media.py): what it says a player fetches is what onair's
transcoder makes — MPEG-TS segments for the classic regime, CMAF parts for the LL one."""

from __future__ import annotations

import pytest

from bench.abr_media import PART_S, SEGMENT_S, as_parts, encode_rung
from pipeline.gop import Gop
from pipeline.ladder import Ladder
from pipeline.timebase import CLOCK_90K
from tests.mediafixtures import cached_flv, gops_from_flv
from workers.transcode.encoder import GopTranscoder

PER = round(SEGMENT_S / PART_S)


@pytest.fixture(scope="module")
def gops(tmp_path_factory: pytest.TempPathFactory) -> list[Gop]:
    media = tmp_path_factory.mktemp("abr-media")
    return gops_from_flv(cached_flv(media, 4.0, size="640x360", bframes=0), "abr-media")


def test_the_parts_are_the_cmaf_parts_the_transcoder_cuts(gops: list[Gop]) -> None:
    rendition = Ladder.parse("160p30:300").rungs[0]
    rung = encode_rung(rendition, gops, PER)
    reference = GopTranscoder(rendition)
    for gop, segment_bytes, part_bytes in zip(
        gops, rung.segment_bytes, rung.part_bytes, strict=True
    ):
        encoding = reference.begin(gop, part_target_90k=round(PART_S * CLOCK_90K))
        encoding.feed(gop.units)
        segment = encoding.finish(gop.duration_90k)
        parts = [len(p.data) for p in encoding.last_parts]
        assert len(parts) == PER  # 2 s of 30 fps cut at 0.5 s: four parts of 15 frames
        assert part_bytes == tuple(parts)
        assert segment_bytes == len(segment.data)
        # the same media in fMP4 costs fewer bytes than in MPEG-TS on a low rung
        assert sum(part_bytes) < segment_bytes


def test_a_gop_cut_into_another_count_of_parts_is_dealt_out_evenly() -> None:
    assert as_parts([10, 20, 30, 40], 4) == (10, 20, 30, 40)
    assert as_parts([50, 50, 1], 4) == (25, 25, 25, 26)
    assert sum(as_parts([7, 7, 7, 7, 7], 4)) == 35
