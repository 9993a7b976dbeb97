"""The VOD builder on real media, without services: ffmpeg test patterns go through the real
transcode path (`RungTranscoder.process`) into a local store, as two publishes of one stream
(a reconnect: timestamps start over, the first GOP after it is a discontinuity); the builder
then writes playlists, MP4s, poster and thumbnails, checked with ffprobe and PyAV. Twice:
workers writing CMAF beside MPEG-TS (live's default: the VOD reads CMAF only) and MPEG-TS
only (`ONAIR_PART_TARGET_MS=0`, or segments from before CMAF)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import av
import pytest

from objectstore.local import LocalStore
from pipeline.errors import MediaError
from pipeline.ladder import Ladder
from pipeline.store import StoredObject
from schemas.codec import Codec
from schemas.records import end_of_stream_record, gop_to_record
from tests.harness import parse_media_playlist
from tests.mediafixtures import cached_flv, ffprobe, gops_from_flv
from workers.transcode.core import RungTranscoder
from workers.vod.builder import VodBuilder
from workers.vod.history import StreamHistory
from workers.vod.media import TS_PACKET, join_cmaf, remux_stream, splice_ts
from workers.vod.spool import SegmentSpool
from workers.vod.timeline import SegmentSet

SID = "demo-20260101T000000Z-abcd"
LADDER = Ladder.parse("360p30:800,160p30:300")
FIRST_S, SECOND_S = 8, 6


class ReadLog(LocalStore):
    """A local store that remembers which keys were read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.read: list[str] = []

    def get(self, key: str) -> StoredObject:
        self.read.append(key)
        return super().get(key)


@pytest.fixture(scope="module", params=["cmaf", "ts"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ReadLog, SegmentSet]:
    """The store after a live run, and every SegmentReady the workers produced."""
    media = tmp_path_factory.mktemp(f"vod-media-{request.param}")
    part_target_90k = 200 * 90 if request.param == "cmaf" else 0
    first = gops_from_flv(cached_flv(media, seconds=FIRST_S, size="640x360"), SID)
    second = gops_from_flv(cached_flv(media, seconds=SECOND_S, size="640x360"), SID)
    second = [
        dataclasses.replace(g, sequence=g.sequence + len(first), discontinuity=i == 0)
        for i, g in enumerate(second)
    ]
    gops = first + second
    records = [gop_to_record(g, channel="demo", ingest_time_ms=1_767_225_602_000) for g in gops]
    records.append(end_of_stream_record(SID, "demo", len(gops), gops[0].config, 0))
    codec = Codec()  # through the wire format, as the workers see them
    records = [codec.expect("GopChunk", codec.encode("GopChunk", r)) for r in records]
    store = ReadLog(media / "store")
    found = SegmentSet(SID)
    for rung in LADDER.rungs:
        transcoder = RungTranscoder(rung, LADDER, store, part_target_90k=part_target_90k)
        for record in records:
            event = transcoder.process(record)
            assert event is not None
            found.add(event)
    return store, found


def is_cmaf(found: SegmentSet) -> bool:
    return bool(found.segments["360p30"][0]["cmaf_key"])


@pytest.fixture(scope="module")
def vod(live: tuple[ReadLog, SegmentSet]) -> dict[str, Any]:
    store, found = live
    history = StreamHistory(SID, started={"channel": "demo", "started_ms": 1}, updates=[])
    store.read.clear()
    built = VodBuilder(store, thumbnail_interval_s=4).build(
        history, found, expected=["360p30", "160p30"], initial=("First", "Games")
    )
    built["_read"] = list(store.read)
    return built


def test_the_vod_reads_the_format_the_workers_wrote(
    live: tuple[ReadLog, SegmentSet], vod: dict[str, Any]
) -> None:
    """CMAF when every segment has it (MPEG-TS is then never read: it can be turned off),
    MPEG-TS otherwise; every segment of both renditions read."""
    _, found = live
    read = vod["_read"]
    if is_cmaf(found):
        record = found.segments["160p30"][3]
        assert record["cmaf_key"] == f"streams/{SID}/160p30/000003.m4s"
        assert record["init_key"].startswith(f"streams/{SID}/160p30/init-")
        assert not [k for k in read if k.endswith(".ts")]
        assert {k for k in read if k.endswith(".m4s")} == {
            f"streams/{SID}/{r}/{n:06d}.m4s" for r in ("360p30", "160p30") for n in range(7)
        }
        inits = [k for k in read if "/init-" in k]
        assert inits and len(inits) == len(set(inits)), "an init segment read more than once"
    else:
        assert found.segments["160p30"][3]["cmaf_key"] == ""
        assert not [k for k in read if k.endswith((".m4s", ".mp4")) and k.startswith("streams/")]
        assert {k for k in read if k.endswith(".ts")} == {
            f"streams/{SID}/{r}/{n:06d}.ts" for r in ("360p30", "160p30") for n in range(7)
        }


def test_the_record_is_complete_and_encodes(vod: dict[str, Any]) -> None:
    assert vod["status"] == "complete"
    assert vod["renditions"] == ["360p30", "160p30"]
    assert vod["segment_count"] == 7
    assert vod["discontinuities"] == 1
    assert vod["chapters"] == [{"start_ms": 0, "title": "First", "category": "Games"}]
    Codec().decode(Codec().encode("Vod", vod))


def test_playlists_mark_the_reconnect(
    live: tuple[ReadLog, SegmentSet], vod: dict[str, Any]
) -> None:
    store, found = live
    text = store.get(f"vod/{SID}/360p30/index.m3u8").body.decode()
    info = parse_media_playlist(text)
    assert info["ended"]
    extension = "m4s" if is_cmaf(found) else "ts"
    assert [s["uri"] for s in info["segments"]] == [f"{n:06d}.{extension}" for n in range(7)]
    if is_cmaf(found):  # fMP4: EXT-X-MAP names each run's init segment, which exists
        init = found.segments["360p30"][0]["init_key"].rsplit("/", 1)[-1]
        assert "#EXT-X-VERSION:6" in text
        assert text.count(f'#EXT-X-MAP:URI="{init}"') == 2  # the start and the reconnect
        assert text.index("#EXT-X-MAP") < text.index("#EXTINF")
        assert store.get(f"streams/{SID}/360p30/{init}").body[4:8] == b"ftyp"
    else:
        assert "#EXT-X-MAP" not in text
    assert [s["discontinuity"] for s in info["segments"]] == [False] * 4 + [True] + [False] * 2
    assert abs(sum(s["duration"] for s in info["segments"]) - FIRST_S - SECOND_S) < 0.2


@pytest.mark.parametrize("rendition", ["360p30", "160p30"])
def test_mp4_is_the_whole_stream_faststart(
    live: tuple[ReadLog, SegmentSet], vod: dict[str, Any], tmp_path: Path, rendition: str
) -> None:
    store, _ = live
    body = store.get(vod["mp4"][rendition]).body
    assert store.get(vod["mp4"][rendition]).content_type == "video/mp4"
    assert body.find(b"moov") < body.find(b"mdat"), "moov must come first (faststart)"
    path = tmp_path / "v.mp4"
    path.write_bytes(body)
    info = ffprobe(path, "-count_frames", "-show_streams", "-show_format")
    assert abs(float(info["format"]["duration"]) - FIRST_S - SECOND_S) < 0.1
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert int(video["nb_read_frames"]) == (FIRST_S + SECOND_S) * 30
    assert any(s["codec_type"] == "audio" for s in info["streams"])


def _jpeg_size(body: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(body), mode="r") as container:
        frame = next(iter(container.decode(video=0)))
        return frame.width, frame.height


def test_poster_and_thumbnail_sprite(live: tuple[ReadLog, SegmentSet], vod: dict[str, Any]) -> None:
    store, _ = live
    poster = store.get(vod["poster"])
    assert poster.content_type == "image/jpeg" and _jpeg_size(poster.body) == (640, 360)
    # 14 s every 4 s: 4 tiles in one row of 160x90
    assert _jpeg_size(store.get(f"vod/{SID}/thumbs.jpg").body) == (640, 90)
    vtt = store.get(vod["thumbnails"]).body.decode()
    assert vtt.startswith("WEBVTT") and "thumbs.jpg#xywh=480,0,160,90" in vtt
    chapters = store.get(vod["chapters_vtt"]).body.decode()
    assert "00:00:00.000 --> 00:00:14.0" in chapters and "First (Games)" in chapters


def _corrupt_packets(data: bytes) -> int:
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        return sum(1 for packet in container.demux() if packet.is_corrupt)


def test_splicing_keeps_the_demuxer_from_flagging_segment_joins(
    live: tuple[ReadLog, SegmentSet],
) -> None:
    store, found = live
    segments = [store.get(found.segments["160p30"][n]["key"]).body for n in range(4)]
    assert _corrupt_packets(b"".join(segments)) > 0  # what plain concatenation does
    out = io.BytesIO()
    written = splice_ts(segments, out)
    assert written == len(out.getvalue()) and written % TS_PACKET == 0
    assert _corrupt_packets(out.getvalue()) == 0
    with pytest.raises(MediaError, match="not MPEG-TS"):
        splice_ts([b"\x00" * TS_PACKET], io.BytesIO())


def test_segments_come_from_the_spool_first(
    live: tuple[ReadLog, SegmentSet], tmp_path: Path
) -> None:
    store, found = live
    spool = SegmentSpool(tmp_path / "spool")
    first, second = (
        found.segments["160p30"][n]["cmaf_key"] or found.segments["160p30"][n]["key"]
        for n in (0, 1)
    )
    spool.put(first, b"local copy")
    builder = VodBuilder(store, spool)
    assert builder.read(first) == b"local copy"
    assert builder.read(second) == store.get(second).body
    assert spool.path(first) == tmp_path / "spool" / first
    with pytest.raises(ValueError, match="not a store key"):
        spool.path(f"streams/{SID}/../../etc/passwd")
    spool.drop(SID)
    assert spool.get(first) is None


def test_one_run_is_piped_straight_into_ffmpeg(
    live: tuple[ReadLog, SegmentSet], tmp_path: Path
) -> None:
    store, found = live
    records = [found.segments["360p30"][n] for n in range(4)]
    output = tmp_path / "run.mp4"
    if is_cmaf(found):
        init = store.get(records[0]["init_key"]).body
        remux_stream((store.get(r["cmaf_key"]).body for r in records), output, init=init)
    else:
        remux_stream((store.get(r["key"]).body for r in records), output)
    info = ffprobe(output, "-count_frames", "-show_streams", "-show_format")
    assert abs(float(info["format"]["duration"]) - FIRST_S) < 0.1
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert int(video["nb_read_frames"]) == FIRST_S * 30
    with pytest.raises(MediaError, match="remux"):
        remux_stream(iter([b"\x47" + b"\x00" * (TS_PACKET - 1)]), tmp_path / "bad.mp4")
    with pytest.raises(MediaError, match="not a CMAF fragment"):
        join_cmaf(b"\0\0\0\x08ftyp", [b"\x47" * TS_PACKET], io.BytesIO())
