"""A rung at the source's own size and frame rate carries the source's H.264 as it came
(Twitch's "Source"): the publisher's access units, B-frames and all, in the MPEG-TS segment
and in the CMAF parts, with no decode or encode; any other rung, or the same rung with
passthrough off, is re-encoded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import pytest

from objectstore.local import LocalStore
from pipeline import cmaf
from pipeline.gop import Gop
from pipeline.ladder import DEFAULT_LADDER, Ladder, Rendition
from pipeline.media import CodecConfig, Track
from tests.mediafixtures import cached_flv, gops_from_flv, probe_frames
from tests.unit.test_transcode_cmaf import _chunks, _probe
from workers.transcode.core import RungTranscoder
from workers.transcode.encoder import GopTranscoder, copies_source

LADDER = Ladder.parse(DEFAULT_LADDER)
PART_TARGET_90K = 18_000  # 0.2 s
_PARAMETER_SETS_AND_AUD = (7, 8, 9)


@pytest.fixture(scope="module")
def gops(tmp_path_factory: pytest.TempPathFactory) -> list[Gop]:
    """720p30 H.264 High with two B-frames, 2 s GOPs, AAC: what OBS sends."""
    media = tmp_path_factory.mktemp("passthrough")
    return gops_from_flv(cached_flv(media, 4.0), "src")


def _config(width: int = 1280, height: int = 720, fps: float = 30.0, profile: int = 100) -> Any:
    return CodecConfig(bytes([1, profile, 0, 31, 0xFF]), None, width, height, fps)


@pytest.mark.parametrize(
    ("rung", "config", "copied"),
    [
        ("720p60", _config(), True),  # 720p30 comes out of a 720p60 rung from 720p30
        ("720p30", _config(), True),
        ("720p60", _config(fps=60.0), True),
        ("720p30", _config(fps=60.0), False),  # every other frame: encoded
        ("480p30", _config(), False),  # scaled: encoded
        ("720p60", _config(width=1279), False),  # an odd width comes out even: encoded
        ("720p60", _config(profile=77), True),  # Main
        ("720p60", _config(profile=66), True),  # Baseline
        ("720p60", _config(profile=110), False),  # High 10: browsers refuse it
        ("720p60", _config(profile=122), False),  # High 4:2:2
        ("720p60", _config(fps=0.0), False),  # no frame rate known: no frame grid
    ],
)
def test_which_rungs_carry_the_source(rung: str, config: CodecConfig, copied: bool) -> None:
    assert copies_source(Rendition(int(rung[:3]), int(rung[4:]), 1_000_000), config) is copied


def _nal_units(access_unit: bytes, *, annexb: bool) -> list[bytes]:
    """The NAL units of an access unit, parameter sets and delimiters left out."""
    nals = cmaf.split_annexb(access_unit if annexb else cmaf.annexb_from_sample(access_unit))
    return [n for n in nals if n[0] & 0x1F not in _PARAMETER_SETS_AND_AUD]


def _ts_video_packets(data: bytes, tmp_path: Path) -> list[tuple[int, int, bytes]]:
    path = tmp_path / "segment.ts"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        return [
            (p.pts, p.dts, bytes(p))
            for p in container.demux(video=0)
            if p.size and p.pts is not None and p.dts is not None
        ]


def test_the_segment_carries_the_sources_access_units(gops: list[Gop], tmp_path: Path) -> None:
    gop = gops[0]
    segment = GopTranscoder(LADDER.get("720p60"), source_passthrough=True).transcode(gop)
    packets = _ts_video_packets(segment.data, tmp_path)
    source = gop.video
    assert [(pts, dts) for pts, dts, _ in packets] == [(u.pts_90k, u.dts_90k) for u in source]
    assert any(pts != dts for pts, dts, _ in packets), "the source's B-frames are kept"
    for (_, _, data), unit in zip(packets, source, strict=True):
        assert _nal_units(data, annexb=True) == _nal_units(unit.payload, annexb=False)
    assert (segment.width, segment.height, segment.fps) == (1280, 720, 30.0)
    assert segment.codecs == cmaf.codecs(gop.config.avc_config, gop.config.aac_config)
    decoded = probe_frames(tmp_path / "segment.ts")
    assert len(decoded) == len(source)
    assert len(probe_frames(tmp_path / "segment.ts", stream="a:0")) == len(gop.audio)


def test_with_passthrough_off_the_same_rung_is_encoded(gops: list[Gop], tmp_path: Path) -> None:
    segment = GopTranscoder(LADDER.get("720p60")).transcode(gops[0])
    packets = _ts_video_packets(segment.data, tmp_path)
    assert len(packets) == len(gops[0].video)
    assert all(pts == dts for pts, dts, _ in packets), "x264 zerolatency writes no B-frames"
    assert _nal_units(packets[1][2], annexb=True) != _nal_units(
        gops[0].video[1].payload, annexb=False
    )


def test_copied_parts_leave_as_they_arrive_and_make_the_segment(
    gops: list[Gop], tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    parts: list[dict[str, Any]] = []
    transcoder = RungTranscoder(
        LADDER.get("720p60"),
        LADDER,
        store,
        part_target_90k=PART_TARGET_90K,
        on_part=parts.append,
        source_passthrough=True,
    )
    announced: list[int] = []
    events = []
    for gop in gops[:2]:
        for n, chunk in enumerate(_chunks(gop, 6)):  # ~3 frames a chunk
            event = transcoder.process(chunk, position=(0, n))
            announced.append(len(parts))
            if event is not None:
                events.append(event)
    assert [e["sequence"] for e in events] == [0, 1]
    first = [p for p in parts if p["sequence"] == 0]
    assert announced[len(_chunks(gops[0], 6)) - 2] >= len(first) - 1, (
        "every part but the last goes out before the GOP's last chunk"
    )
    assert [p["part"] for p in first] == list(range(len(first)))
    assert first[0]["independent"] and not any(p["independent"] for p in first[1:])
    assert (first[0]["width"], first[0]["height"]) == (1280, 720)
    durations = [p["duration_90k"] for p in first]
    assert all(0.85 * PART_TARGET_90K <= d <= PART_TARGET_90K for d in durations[:-1])
    assert sum(durations) == gops[0].duration_90k, "decode time adds up to the GOP"
    second = [p for p in parts if p["sequence"] == 1]
    assert second[0]["start_pts_90k"] == first[0]["start_pts_90k"] + sum(durations)
    init = store.get(first[0]["init_key"]).body
    whole = store.get(first[-1]["segment_key"]).body
    assert whole == b"".join(store.get(p["key"]).body for p in first)
    (tmp_path / "whole.mp4").write_bytes(init + whole)
    probe = _probe(tmp_path / "whole.mp4")
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert int(video["nb_read_frames"]) == len(gops[0].video)
    assert (video["width"], video["height"]) == (1280, 720)
    assert video["has_b_frames"] >= 1, "the source's B-frames are kept"
    (tmp_path / "part0.mp4").write_bytes(init + store.get(first[0]["key"]).body)
    alone = _probe(tmp_path / "part0.mp4")["streams"]
    frames = int(next(s for s in alone if s["codec_type"] == "video")["nb_read_frames"])
    assert frames == durations[0] // 3_000, "the IDR part decodes alone, all its frames"


def test_parameter_sets_go_after_an_access_unit_delimiter(gops: list[Gop]) -> None:
    """A publisher that opens each frame with an AUD (hardware encoders do): the copied
    keyframe still opens with it, then SPS and PPS, then the frame's own NAL units."""
    aud = b"\x00\x00\x00\x02\x09\xf0"
    gop = gops[0]
    units = tuple(
        replace(u, payload=aud + u.payload) if u.track is Track.VIDEO else u for u in gop.units
    )
    encoding = GopTranscoder(LADDER.get("720p60"), source_passthrough=True).begin(gop)
    encoding.feed(units)
    key, other = bytes(encoding.run.packets[0]), bytes(encoding.run.packets[1])
    types = [n[0] & 0x1F for n in cmaf.split_annexb(key)]
    assert types[:3] == [9, 7, 8] and 5 in types
    rest = [n[0] & 0x1F for n in cmaf.split_annexb(other)]
    assert rest[0] == 9 and 7 not in rest  # not a keyframe: no parameter sets
    plain = GopTranscoder(LADDER.get("720p60"), source_passthrough=True).begin(gop)
    plain.feed(gop.units)
    assert [n[0] & 0x1F for n in cmaf.split_annexb(bytes(plain.run.packets[0]))][:2] == [7, 8]
