"""GopTranscoder on real media: ffmpeg test patterns in, segments checked with ffprobe."""

from __future__ import annotations

import dataclasses
import io
import itertools
import re
from dataclasses import replace
from pathlib import Path

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import MediaError
from pipeline.gop import Gop
from pipeline.ladder import DEFAULT_LADDER, Ladder
from pipeline.media import MediaUnit, Track
from tests.mediafixtures import cached_flv, gops_from_flv, probe_frames, probe_streams
from workers.transcode.encoder import (
    EncodedSegment,
    GopTranscoder,
    audio_object_type,
    codecs_string,
    find_nal,
)

LADDER = Ladder.parse(DEFAULT_LADDER)
RUNGS = ["720p60", "480p30", "360p30", "160p30"]  # what a 720p30 source gets
SIZES = {"720p60": (1280, 720), "480p30": (852, 480), "360p30": (640, 360), "160p30": (284, 160)}
FRAME_90K = 3000  # one frame at 30 fps


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encoder-media")


@pytest.fixture(scope="session")
def gops(media_dir: Path) -> list[Gop]:
    """6 s of 1280x720 at 30 fps, 2 s GOPs with B-frames, AAC stereo 48 kHz."""
    return gops_from_flv(cached_flv(media_dir, seconds=6), "s720")


@pytest.fixture(scope="session")
def encoded(gops: list[Gop]) -> dict[str, list[EncodedSegment]]:
    """Every GOP through every rung, one transcoder per rung as the worker does."""
    out: dict[str, list[EncodedSegment]] = {}
    for name in RUNGS:
        transcoder = GopTranscoder(LADDER.get(name))
        out[name] = [transcoder.transcode(gop) for gop in gops]
    return out


@pytest.fixture(scope="session")
def segments(encoded: dict[str, list[EncodedSegment]], media_dir: Path) -> dict[str, list[Path]]:
    """The same segments as .ts files, for ffprobe."""
    out: dict[str, list[Path]] = {}
    for name, items in encoded.items():
        out[name] = []
        for n, segment in enumerate(items):
            path = media_dir / f"{name}_{n}.ts"
            path.write_bytes(segment.data)
            out[name].append(path)
    return out


def _video_pts(gop: Gop) -> list[int]:
    return sorted(u.pts_90k for u in gop.video)


def test_source_cuts_into_three_gops(gops: list[Gop]) -> None:
    assert [len(g.video) for g in gops] == [60, 60, 60]
    assert [g.duration_90k for g in gops] == [180_000] * 3
    assert all(g.audio for g in gops)


@pytest.mark.parametrize("name", RUNGS, ids=RUNGS)
def test_segment_decodes_cleanly_at_the_right_size(
    name: str, gops: list[Gop], segments: dict[str, list[Path]]
) -> None:
    for gop, path in zip(gops, segments[name], strict=True):
        frames = probe_frames(path)  # raises if ffprobe -v error prints anything
        assert len(frames) == 60
        assert frames[0]["key_frame"] == 1 and frames[0]["pict_type"] == "I"
        assert [f["key_frame"] for f in frames[1:]] == [0] * 59  # one IDR per segment
        assert {(f["width"], f["height"]) for f in frames} == {SIZES[name]}
        pts = [f["pts"] for f in frames]
        assert pts == _video_pts(gop)  # source PTS kept, B-frames reordered
        duration = pts[-1] - pts[0] + FRAME_90K
        assert abs(duration - gop.duration_90k) <= FRAME_90K


@pytest.mark.parametrize("name", RUNGS, ids=RUNGS)
def test_segment_metadata(
    name: str, gops: list[Gop], encoded: dict[str, list[EncodedSegment]]
) -> None:
    segment = encoded[name][1]
    assert (segment.width, segment.height) == SIZES[name]
    assert segment.fps == 30
    assert segment.duration_90k == gops[1].duration_90k
    assert segment.bitrate_bps == round(len(segment.data) * 8 / 2)
    with av.open(io.BytesIO(segment.data), "r") as container:
        video_bytes = sum(p.size for p in container.demux(video=0))
    # CBR-like VBV keeps the video near the rung's bitrate; audio and TS overhead come on top
    assert video_bytes * 8 / 2 == pytest.approx(LADDER.get(name).bitrate_bps, rel=0.2)
    assert re.fullmatch(r"avc1\.64[0-9a-f]{4},mp4a\.40\.2", segment.codecs)


def test_segment_n_starts_at_the_gop_pts_in_every_rendition(
    gops: list[Gop], segments: dict[str, list[Path]]
) -> None:
    for n, gop in enumerate(gops):
        starts = {name: probe_frames(segments[name][n], limit=1)[0]["pts"] for name in RUNGS}
        assert set(starts.values()) == {gop.start_pts_90k}, starts


@pytest.mark.parametrize("name", RUNGS, ids=RUNGS)
def test_concatenated_segments_play_continuously(
    name: str, segments: dict[str, list[Path]], media_dir: Path
) -> None:
    joined = media_dir / f"{name}_all.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in segments[name]))
    video = [f["pts"] for f in probe_frames(joined)]
    assert len(video) == 180
    steps = [b - a for a, b in itertools.pairwise(video)]
    assert min(steps) > 0 and max(steps) <= FRAME_90K + 90  # ms-rounded source timestamps
    audio = [f["pts"] for f in probe_frames(joined, "a:0")]
    audio_steps = [b - a for a, b in itertools.pairwise(audio)]
    aac_frame_90k = 1024 * 90_000 // 48_000
    assert min(audio_steps) > 0 and max(audio_steps) <= aac_frame_90k + 90


def test_audio_is_the_source_aac_copied(gops: list[Gop], segments: dict[str, list[Path]]) -> None:
    path = segments["360p30"][1]
    audio = [s for s in probe_streams(path) if s["codec_type"] == "audio"]
    assert len(audio) == 1
    assert (audio[0]["codec_name"], audio[0]["profile"]) == ("aac", "LC")
    assert (audio[0]["sample_rate"], audio[0]["channels"]) == ("48000", 2)
    with av.open(str(path)) as container:
        payloads = [bytes(p)[7:] for p in container.demux(audio=0) if p.size]  # minus ADTS
    assert payloads == [u.payload for u in gops[1].audio]


def test_segments_are_a_pure_function_of_the_gop(gops: list[Gop]) -> None:
    """A transcoder that already did other GOPs (decoder reused) writes the same bytes as a
    fresh one: nothing leaks from one GOP into the next, and a replay is idempotent."""
    rung = LADDER.get("160p30")
    used = GopTranscoder(rung)
    used.transcode(gops[2])
    used.transcode(gops[0])
    assert used.transcode(gops[1]).data == GopTranscoder(rung).transcode(gops[1]).data


def test_60_fps_source_keeps_every_other_frame_on_30_fps_rungs(media_dir: Path) -> None:
    gops = gops_from_flv(cached_flv(media_dir, seconds=2, size="320x180", fps=60), "s60")
    assert len(gops) == 1 and len(gops[0].video) == 120
    source_pts = _video_pts(gops[0])
    # 720p60 on a 180p source: no upscaling, and 60 fps kept
    cases = [
        ("160p30", (284, 160), 30.0, source_pts[::2]),
        ("720p60", (320, 180), 60.0, source_pts),
    ]
    for name, size, fps, expected in cases:
        segment = GopTranscoder(LADDER.get(name)).transcode(gops[0])
        path = media_dir / f"s60_{name}.ts"
        path.write_bytes(segment.data)
        frames = probe_frames(path)
        assert [f["pts"] for f in frames] == expected
        assert (segment.width, segment.height, segment.fps) == (*size, fps)
        assert {(f["width"], f["height"]) for f in frames} == {size}


def test_frame_rate_missing_from_metadata_is_counted(media_dir: Path) -> None:
    gops = gops_from_flv(cached_flv(media_dir, seconds=2, size="320x180", fps=60), "s60")
    gop = dataclasses.replace(gops[0], config=dataclasses.replace(gops[0].config, fps=0.0))
    segment = GopTranscoder(LADDER.get("160p30")).transcode(gop)
    assert segment.fps == pytest.approx(30, abs=0.1)


@pytest.mark.parametrize("bt709", [True, False], ids=["bt709", "untagged"])
def test_colour_description_follows_the_source(bt709: bool, media_dir: Path) -> None:
    flv = cached_flv(media_dir, seconds=2, size="320x180", audio=False, bt709=bt709)
    segment = GopTranscoder(LADDER.get("160p30")).transcode(gops_from_flv(flv)[0])
    path = media_dir / f"colour-{bt709}.ts"
    path.write_bytes(segment.data)
    (video,) = probe_streams(path)
    expected = {"color_space": "bt709", "color_primaries": "bt709", "color_transfer": "bt709"}
    for key, value in expected.items():
        assert video.get(key) == (value if bt709 else None), key
    assert video.get("color_range") == ("tv" if bt709 else None)


def test_source_without_audio(media_dir: Path) -> None:
    gops = gops_from_flv(cached_flv(media_dir, seconds=2, size="320x180", audio=False), "mute")
    segment = GopTranscoder(LADDER.get("160p30")).transcode(gops[0])
    path = media_dir / "mute.ts"
    path.write_bytes(segment.data)
    assert [s["codec_type"] for s in probe_streams(path)] == ["video"]
    assert re.fullmatch(r"avc1\.64[0-9a-f]{4}", segment.codecs)
    assert len(probe_frames(path)) == 60


def _garbage(gop: Gop, payload: bytes) -> Gop:
    units = tuple(
        dataclasses.replace(u, payload=payload) if u.track is Track.VIDEO else u for u in gop.units
    )
    return dataclasses.replace(gop, units=units)


def test_undecodable_gop_raises_media_error_and_the_next_gop_still_works(
    gops: list[Gop],
) -> None:
    transcoder = GopTranscoder(LADDER.get("160p30"))
    with pytest.raises(MediaError, match="GOP 1"):
        transcoder.transcode(_garbage(gops[1], b"\x00\x00\x00\x05\x65garbage" * 3))
    assert (
        transcoder.transcode(gops[2]).data
        == GopTranscoder(LADDER.get("160p30")).transcode(gops[2]).data
    )


def test_bad_avcc_raises_media_error(gops: list[Gop]) -> None:
    config = dataclasses.replace(gops[0].config, avc_config=b"\x01\x02")
    with pytest.raises(MediaError):
        GopTranscoder(LADDER.get("160p30")).transcode(dataclasses.replace(gops[0], config=config))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_hostile_payloads_give_media_error_or_a_segment(
    payloads: list[bytes], gops: list[Gop]
) -> None:
    units = [
        MediaUnit(Track.VIDEO, 3000 * i, 3000 * i, i == 0, payload)
        for i, payload in enumerate(payloads)
    ]
    gop = dataclasses.replace(gops[0], units=tuple(units), start_pts_90k=0)
    try:
        segment = GopTranscoder(LADDER.get("160p30")).transcode(gop)
    except MediaError:
        return
    assert isinstance(segment, EncodedSegment) and segment.data[:1] == b"G"


@pytest.mark.parametrize(
    ("asc", "aot"),
    [(b"\x11\x90", 2), (b"\x2b\x92\x08\x00", 5), (b"\xf8\xe0\x00", 39)],
    ids=["aac-lc", "he-aac", "escaped"],
)
def test_audio_object_type(asc: bytes, aot: int) -> None:
    assert audio_object_type(asc) == aot


def test_codecs_string_reads_the_sps() -> None:
    access_unit = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67\x64\x00\x1f\xac" + b"\x00" * 3
    assert find_nal(access_unit, 9) == b"\x09\xf0"
    assert codecs_string(access_unit, b"\x11\x90") == "avc1.64001f,mp4a.40.2"
    assert codecs_string(access_unit, None) == "avc1.64001f"
    with pytest.raises(MediaError):
        codecs_string(b"\x00\x00\x01\x09\xf0", None)


def test_a_gop_fed_in_parts_encodes_to_the_same_segment(gops: list[Gop]) -> None:
    """Low latency: ingest sends a GOP in parts and the worker encodes each as it arrives;
    the segment is the one the whole GOP gives, byte for byte."""
    rung = LADDER.get("360p30")
    gop = gops[1]
    whole = GopTranscoder(rung).transcode(gop)
    encoding = GopTranscoder(rung).begin(replace(gop, units=(), duration_90k=0))
    for start in range(0, len(gop.units), 37):
        encoding.feed(gop.units[start : start + 37])
    assert encoding.finish(gop.duration_90k) == whole
