from __future__ import annotations

import pytest

from gateway.rtmp.to_media import FlvToMedia, TimestampUnwrapper, estimate_fps, metadata_fps
from pipeline.errors import FlvError
from pipeline.media import CodecConfig, MediaUnit, Track
from tests.unit.rtmp.samples import (
    ASC_44K_STEREO,
    ASC_48K_MONO,
    AVCC_320X180,
    AVCC_640X360,
    aac_frame_tag,
    aac_header_tag,
    avc_frame_tag,
    avc_header_tag,
)

UNWRAP_CASES = [
    ("monotonic", [0, 33, 66], [0, 33, 66]),
    ("small-step-back", [100, 90, 120], [100, 90, 120]),
    (
        "32-bit-wrap",
        [0xFFFFFFF0, 0x80000000 + 5, 0xFFFFFFFF, 0x10],
        [0xFFFFFFF0, 0x80000005, 0xFFFFFFFF, 0x100000010],
    ),
    (
        "31-bit-wrap-as-ffmpeg-sends",
        [0x7FFFFFF0, 0x7FFFFFFF, 0x0F],
        [0x7FFFFFF0, 0x7FFFFFFF, 0x8000000F],
    ),
    (
        "late-packet-across-32-bit-wrap",
        [0xFFFFFFFE, 0x05, 0xFFFFFFFF, 0x10],
        [0xFFFFFFFE, 0x100000005, 0xFFFFFFFF, 0x100000010],
    ),
    (
        "late-packet-across-31-bit-wrap",
        [0x7FFFFFFE, 0x05, 0x7FFFFFFF, 0x10],
        [0x7FFFFFFE, 0x80000005, 0x7FFFFFFF, 0x80000010],
    ),
    ("starts-high", [2147482352, 2147482385], [2147482352, 2147482385]),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [c[1:] for c in UNWRAP_CASES], ids=[c[0] for c in UNWRAP_CASES]
)
def test_unwraps_timestamps(raw: list[int], expected: list[int]) -> None:
    clock = TimestampUnwrapper()
    assert [clock.unwrap(r) for r in raw] == expected


FPS_CASES = [
    ("30-from-33-34-ms-steps", [0, 33, 67, 100, 133, 167, 200, 233], 30.0),
    ("25", [40 * i for i in range(8)], 25.0),
    ("29.97-reads-as-30-at-ms-resolution", [round(i * 1001 / 30) for i in range(8)], 30.0),
    ("59.94-reads-as-60", [round(i * 1001 / 60) for i in range(8)], 60.0),
    ("23.976-reads-as-24", [round(i * 1001 / 24) for i in range(8)], 24.0),
    ("60", [round(i * 1000 / 60) for i in range(8)], 60.0),
    ("uncommon-rounded", [0, 70, 140, 210], 14.29),
    ("one-frame-falls-back", [0], 30.0),
    ("no-progress-falls-back", [5, 5, 5], 30.0),
    # found by fuzzing: rounded to 0.0 fps, a CodecConfig with no frame rate
    ("hours-apart-falls-back", [4278190080, 4294967330], 30.0),
    ("repeated-timestamps-falls-back", [0, 0, 0, 1], 30.0),  # 3000 fps
]


@pytest.mark.parametrize(
    ("dts", "expected"), [c[1:] for c in FPS_CASES], ids=[c[0] for c in FPS_CASES]
)
def test_estimates_fps(dts: list[int], expected: float) -> None:
    assert estimate_fps(dts) == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"framerate": 30.0}, 30.0),
        ({"videoframerate": 25.0}, 25.0),
        ({"framerate": 0.0}, None),
        ({"framerate": "30"}, None),
        ({"framerate": True}, None),
        ({"framerate": float("nan")}, None),
        ({}, None),
    ],
    ids=["framerate", "videoframerate", "zero", "string", "bool", "nan", "absent"],
)
def test_reads_fps_from_metadata(metadata: dict[str, object], expected: float | None) -> None:
    assert metadata_fps(metadata) == expected


def feed(media: FlvToMedia, tags: list[tuple[str, int, bytes]]) -> list[CodecConfig | MediaUnit]:
    out: list[CodecConfig | MediaUnit] = []
    for kind, ts, body in tags:
        out += media.video(ts, body) if kind == "v" else media.audio(ts, body)
    return out


def kinds(outputs: list[CodecConfig | MediaUnit]) -> list[str]:
    return ["config" if isinstance(o, CodecConfig) else o.track.value for o in outputs]


def with_fps(fps: float | None) -> FlvToMedia:
    media = FlvToMedia()
    if fps is not None:
        media.set_metadata({"framerate": fps})
    return media


START = [("v", 0, avc_header_tag()), ("a", 0, aac_header_tag())]
GOP = [
    ("v", 0, avc_frame_tag(True, 66)),
    ("a", 10, aac_frame_tag()),
    ("v", 33, avc_frame_tag(False)),
]


def test_config_then_units_with_metadata_fps() -> None:
    out = feed(with_fps(30.0), START + GOP)
    assert kinds(out) == ["config", "video", "audio", "video"]
    config = out[0]
    assert config == CodecConfig(
        avc_config=AVCC_640X360,
        aac_config=ASC_48K_MONO,
        width=640,
        height=360,
        fps=30.0,
        audio_sample_rate=48000,
        audio_channels=1,
    )
    key, audio, inter = out[1:]
    assert (
        isinstance(key, MediaUnit) and isinstance(audio, MediaUnit) and isinstance(inter, MediaUnit)
    )
    assert (key.keyframe, key.dts_90k, key.pts_90k) == (True, 0, 66 * 90)
    assert (audio.track, audio.dts_90k, audio.pts_90k, audio.keyframe) == (
        Track.AUDIO,
        900,
        900,
        True,
    )
    assert (inter.keyframe, inter.dts_90k) == (False, 33 * 90)
    assert audio.payload == aac_frame_tag()[2:]


def test_without_metadata_units_wait_for_the_fps_estimate() -> None:
    media = FlvToMedia(fps_probe_frames=4)
    out = feed(media, [*START, ("v", 0, avc_frame_tag(True))])
    out += feed(media, [("v", t, avc_frame_tag(False)) for t in (40, 80)])
    assert out == []
    out = feed(media, [("v", 120, avc_frame_tag(False)), ("v", 160, avc_frame_tag(False))])
    assert kinds(out) == ["config", "video", "video", "video", "video", "video"]
    assert isinstance(out[0], CodecConfig) and out[0].fps == 25.0


def test_end_of_stream_releases_held_units() -> None:
    media = FlvToMedia()
    assert feed(media, [*START, ("v", 0, avc_frame_tag(True)), ("a", 5, aac_frame_tag())]) == []
    out = media.flush()
    assert kinds(out) == ["config", "video", "audio"]
    assert isinstance(out[0], CodecConfig) and out[0].fps == 30.0
    assert media.flush() == []


def test_video_only_stream_gets_a_config_without_audio() -> None:
    out = feed(with_fps(25.0), [("v", 0, avc_header_tag()), ("v", 0, avc_frame_tag(True))])
    config = out[0]
    assert isinstance(config, CodecConfig)
    assert (config.aac_config, config.audio_sample_rate, config.audio_channels) == (None, 0, 0)


def test_late_audio_header_yields_a_second_config() -> None:
    media = with_fps(30.0)
    out = feed(media, [("v", 0, avc_header_tag()), ("v", 0, avc_frame_tag(True))])
    out += feed(media, [("a", 0, aac_header_tag(ASC_44K_STEREO)), ("a", 20, aac_frame_tag())])
    assert kinds(out) == ["config", "video", "config", "audio"]
    first, second = out[0], out[2]
    assert isinstance(first, CodecConfig) and isinstance(second, CodecConfig)
    assert first.aac_config is None
    assert (second.aac_config, second.audio_sample_rate, second.audio_channels) == (
        ASC_44K_STEREO,
        44100,
        2,
    )


def test_repeated_sequence_header_is_silent_and_a_new_one_is_not() -> None:
    media = with_fps(30.0)
    feed(media, START + GOP)
    assert feed(media, START) == []
    out = feed(media, [("v", 66, avc_header_tag(AVCC_320X180)), ("v", 66, avc_frame_tag(True))])
    assert kinds(out) == ["config", "video"]
    assert isinstance(out[0], CodecConfig)
    assert (out[0].width, out[0].height, out[0].fps) == (320, 180, 30.0)


def test_drops_what_cannot_be_decoded_yet() -> None:
    media = with_fps(30.0)
    out = feed(
        media,
        [
            ("v", 0, avc_frame_tag(True)),  # before any sequence header
            ("a", 0, aac_frame_tag()),  # before the AAC header
            *START,
            ("a", 1, aac_frame_tag()),  # before the first keyframe
            ("v", 2, avc_frame_tag(False)),  # not a keyframe
            ("v", 3, b"\x17\x01\x00\x00\x00"),  # empty
            ("v", 4, b"\x17\x02\x00\x00\x00"),  # end of sequence
            ("v", 5, b"\x57\x00"),  # info frame
            ("v", 6, avc_frame_tag(True)),
        ],
    )
    assert kinds(out) == ["config", "video"]
    assert media.dropped_units == 5


def test_unwraps_across_a_wrap_mid_stream() -> None:
    media = with_fps(30.0)
    base = 0xFFFFFFFF - 40
    out = feed(
        media,
        [
            *START,
            ("v", base, avc_frame_tag(True)),
            ("v", base + 33 & 4294967295, avc_frame_tag(False)),
            ("v", base + 66 & 4294967295, avc_frame_tag(False)),
        ],
    )
    dts = [o.dts_90k for o in out if isinstance(o, MediaUnit)]
    assert dts == [base * 90, (base + 33) * 90, (base + 66) * 90]


def test_bad_tags_raise_flv_errors() -> None:
    with pytest.raises(FlvError):
        FlvToMedia().video(0, b"\x22\x00")
    with pytest.raises(FlvError):
        FlvToMedia().audio(0, b"\x2f\x00")
