from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rtmp.flv import (
    MAX_NALUS_PER_TAG,
    MAX_SPS_BYTES,
    AacFrame,
    AacInfo,
    AacSequenceHeader,
    AvcEndOfSequence,
    AvcNalus,
    AvcSequenceHeader,
    SpsInfo,
    _Bits,
    parse_audio_specific_config,
    parse_audio_tag,
    parse_avc_config,
    parse_sps,
    parse_video_tag,
)
from pipeline.errors import FlvError
from tests.unit.rtmp.samples import (
    ASC_44K_STEREO,
    ASC_48K_MONO,
    AVCC_640X360,
    IDR_NAL,
    P_NAL,
    aac_frame_tag,
    aac_header_tag,
    avc_frame_tag,
    avc_header_tag,
    avcc,
    ffmpeg_flv,
)


def _bits(*fields: tuple[int, int]) -> bytes:
    value, size = 0, 0
    for width, v in fields:
        value, size = (value << width) | v, size + width
    pad = -size % 8
    return (value << pad).to_bytes((size + pad) // 8, "big")


# (ffmpeg video options, size, expected width, height, profile_idc)
ENCODES = [
    ("baseline-640x360-cropped", ("-profile:v", "baseline"), "640x360", 640, 360, 66),
    ("main-1280x720", ("-profile:v", "main"), "1280x720", 1280, 720, 77),
    ("high-1920x1080-cropped", ("-profile:v", "high"), "1920x1080", 1920, 1080, 100),
    ("high-odd-size-426x240", (), "426x240", 426, 240, 100),
    ("high-176x144", (), "176x144", 176, 144, 100),
    ("high422-crop-unit-1-row", ("-pix_fmt", "yuv422p"), "640x360", 640, 360, 122),
    ("high444-crop-unit-1-column", ("-pix_fmt", "yuv444p"), "642x358", 642, 358, 244),
    (
        "interlaced-field-pairs",
        ("-flags", "+ildct+ilme", "-x264-params", "interlaced=1"),
        "640x360",
        640,
        360,
        100,
    ),
    ("scaling-matrix", ("-x264-params", "cqm=jvt"), "320x240", 320, 240, 100),
]


@pytest.mark.parametrize(
    ("options", "size", "width", "height", "profile"),
    [e[1:] for e in ENCODES],
    ids=[e[0] for e in ENCODES],
)
def test_sequence_header_from_real_x264(
    options: tuple[str, ...], size: str, width: int, height: int, profile: int
) -> None:
    tags = ffmpeg_flv(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate=25",
        "-frames:v",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        *options,
    )
    parsed = [parse_video_tag(body) for kind, _, body in tags if kind == 9]
    header = parsed[0]
    assert isinstance(header, AvcSequenceHeader)
    assert (header.sps.width, header.sps.height, header.sps.profile_idc) == (width, height, profile)
    assert header.record[1] == profile
    frame = parsed[1]
    assert isinstance(frame, AvcNalus)
    assert frame.keyframe


@pytest.mark.parametrize(
    ("options", "sample_rate", "channels"),
    [
        (("-ar", "48000", "-ac", "1"), 48000, 1),
        (("-ar", "44100", "-ac", "2"), 44100, 2),
        (("-ar", "22050", "-ac", "6"), 22050, 6),
    ],
    ids=["48k-mono", "44k1-stereo", "22k05-5.1"],
)
def test_audio_specific_config_from_real_aac(
    options: tuple[str, ...], sample_rate: int, channels: int
) -> None:
    tags = ffmpeg_flv("-f", "lavfi", "-i", "sine", "-t", "0.1", *options, "-c:a", "aac")
    parsed = [parse_audio_tag(body) for kind, _, body in tags if kind == 8]
    header = parsed[0]
    assert isinstance(header, AacSequenceHeader)
    assert header.info == AacInfo(object_type=2, sample_rate=sample_rate, channels=channels)
    assert all(isinstance(p, AacFrame) and p.data for p in parsed[1:])


VIDEO_CASES = [
    (
        "sequence-header",
        avc_header_tag(),
        AvcSequenceHeader(AVCC_640X360, SpsInfo(640, 360, 66, 30)),
    ),
    ("keyframe", avc_frame_tag(True), AvcNalus(True, 0, avcc(IDR_NAL))),
    ("inter-frame-positive-cts", avc_frame_tag(False, 66), AvcNalus(False, 66, avcc(P_NAL))),
    ("negative-cts", avc_frame_tag(False, -33), AvcNalus(False, -33, avcc(P_NAL))),
    (
        "several-nal-units",
        avc_frame_tag(True, 0, (b"\x06\x05", IDR_NAL)),
        AvcNalus(True, 0, avcc(b"\x06\x05", IDR_NAL)),
    ),
    ("empty-nalu-packet", b"\x27\x01\x00\x00\x00", AvcNalus(False, 0, b"")),
    ("end-of-sequence", b"\x17\x02\x00\x00\x00", AvcEndOfSequence()),
    ("info-frame", b"\x57\x00", None),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in VIDEO_CASES], ids=[c[0] for c in VIDEO_CASES]
)
def test_parses_video_tags(body: bytes, expected: object) -> None:
    assert parse_video_tag(body) == expected


AUDIO_CASES = [
    (
        "config-48k-mono",
        aac_header_tag(ASC_48K_MONO),
        AacSequenceHeader(ASC_48K_MONO, AacInfo(2, 48000, 1)),
    ),
    (
        "config-44k-stereo",
        aac_header_tag(ASC_44K_STEREO),
        AacSequenceHeader(ASC_44K_STEREO, AacInfo(2, 44100, 2)),
    ),
    ("raw-frame", aac_frame_tag(b"\x01\x02"), AacFrame(b"\x01\x02")),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in AUDIO_CASES], ids=[c[0] for c in AUDIO_CASES]
)
def test_parses_audio_tags(body: bytes, expected: object) -> None:
    assert parse_audio_tag(body) == expected


ASC_CASES = [
    ("lc-48k-stereo", _bits((5, 2), (4, 3), (4, 2)), AacInfo(2, 48000, 2)),
    ("escape-frequency", _bits((5, 2), (4, 15), (24, 12345), (4, 1)), AacInfo(2, 12345, 1)),
    ("he-aac-explicit-sbr", _bits((5, 5), (4, 6), (4, 2), (4, 3), (5, 2)), AacInfo(2, 48000, 2)),
    ("escaped-object-type", _bits((5, 31), (6, 10), (4, 4), (4, 7)), AacInfo(42, 44100, 8)),
    ("channels-in-pce", _bits((5, 2), (4, 4), (4, 0)), AacInfo(2, 44100, 0)),
]


@pytest.mark.parametrize(
    ("config", "expected"), [c[1:] for c in ASC_CASES], ids=[c[0] for c in ASC_CASES]
)
def test_parses_audio_specific_config(config: bytes, expected: AacInfo) -> None:
    assert parse_audio_specific_config(config) == expected


def ue(value: int) -> tuple[int, int]:
    """An exp-Golomb code as a (width, value) bit field."""
    return 2 * (value + 1).bit_length() - 1, value + 1


def se(value: int) -> tuple[int, int]:
    return ue(2 * value - 1 if value > 0 else -2 * value)


def sps_nal(
    *,
    profile: int = 66,
    chroma: int | None = None,
    scaling_deltas: tuple[int, ...] = (),
    poc: tuple[tuple[int, int], ...] = (ue(2),),
    width_mbs: int = 40,
    height_units: int = 23,
    frame_mbs_only: int = 1,
    crop: tuple[int, int, int, int] | None = (0, 0, 0, 4),
) -> bytes:
    """An SPS NAL unit, field by field (H.264 7.3.2.1.1)."""
    fields = [(8, profile), (8, 0), (8, 30), ue(0)]
    if chroma is not None:
        fields += [ue(chroma)] + ([(1, 0)] if chroma == 3 else [])  # separate_colour_plane
        fields += [ue(0), ue(0), (1, 0), (1, 1 if scaling_deltas else 0)]
        if scaling_deltas:  # first 4x4 list explicit, the other seven absent
            fields += [(1, 1), *(se(d) for d in scaling_deltas), *[(1, 0)] * 7]
    fields += [ue(0), *poc, ue(1), (1, 0), ue(width_mbs - 1), ue(height_units - 1)]
    fields += [(1, frame_mbs_only)] + ([(1, 0)] if not frame_mbs_only else []) + [(1, 1)]
    fields += [(1, 1), *(ue(c) for c in crop)] if crop else [(1, 0)]
    fields += [(1, 1)]  # rbsp stop bit
    return b"\x67" + _bits(*fields)


SPS_CASES = [
    ("baseline-640x360", sps_nal(), SpsInfo(640, 360, 66, 30)),
    ("no-cropping", sps_nal(crop=None), SpsInfo(640, 368, 66, 30)),
    ("high-4:2:0", sps_nal(profile=100, chroma=1), SpsInfo(640, 360, 100, 30)),
    (
        "high-4:2:2-crop-rows-by-1",
        sps_nal(profile=122, chroma=2, crop=(0, 0, 0, 8)),
        SpsInfo(640, 360, 122, 30),
    ),
    (
        "high-4:4:4-crop-columns-by-1",
        sps_nal(profile=244, chroma=3, crop=(0, 2, 0, 8)),
        SpsInfo(638, 360, 244, 30),
    ),
    (
        "scaling-list",
        sps_nal(profile=100, chroma=1, scaling_deltas=(1, -2, 3) * 5 + (4,)),
        SpsInfo(640, 360, 100, 30),
    ),
    (
        "scaling-list-ends-early",
        sps_nal(profile=100, chroma=1, scaling_deltas=(5, -13)),
        SpsInfo(640, 360, 100, 30),
    ),
    ("monochrome", sps_nal(profile=100, chroma=0, crop=(0, 0, 0, 8)), SpsInfo(640, 360, 100, 30)),
    (
        "field-pairs",
        sps_nal(height_units=12, frame_mbs_only=0, crop=(0, 0, 0, 6)),
        SpsInfo(640, 360, 66, 30),
    ),
    ("poc-type-0", sps_nal(poc=(ue(0), ue(4))), SpsInfo(640, 360, 66, 30)),
    (
        "poc-type-1",
        sps_nal(poc=(ue(1), (1, 0), (1, 1), (1, 1), ue(2), (3, 2), (3, 3))),
        SpsInfo(640, 360, 66, 30),
    ),
]


@pytest.mark.parametrize(
    ("nal", "expected"), [c[1:] for c in SPS_CASES], ids=[c[0] for c in SPS_CASES]
)
def test_parses_sps(nal: bytes, expected: SpsInfo) -> None:
    assert parse_sps(nal) == expected


SPS_ERRORS = [
    ("crop-leaves-nothing", sps_nal(width_mbs=1, crop=(4, 4, 0, 0)), "no picture"),
    ("too-large", sps_nal(width_mbs=2000), "too large"),
    ("chroma-format-4", sps_nal(profile=100, chroma=4), "chroma_format_idc"),
    ("poc-type-3", sps_nal(poc=(ue(3),)), "pic_order_cnt_type"),
    ("poc-cycle-256", sps_nal(poc=(ue(1), (1, 0), (1, 1), (1, 1), ue(256))), "> 255"),
    ("exp-golomb-too-long", b"\x67\x42\x00\x1e" + bytes(8) + b"\x01", "exp-Golomb"),
    ("truncated", sps_nal()[:6], "ends too early"),
    ("not-an-sps", b"\x68\xce\x0f\xc8", "not an SPS"),
]


@pytest.mark.parametrize(
    ("nal", "match"), [c[1:] for c in SPS_ERRORS], ids=[c[0] for c in SPS_ERRORS]
)
def test_refuses_sps(nal: bytes, match: str) -> None:
    with pytest.raises(FlvError, match=match):
        parse_sps(nal)


VIDEO_ERRORS = [
    ("empty", b"", "empty"),
    ("hevc-enhanced-rtmp", b"\x90hvc1\x00\x00\x00", r"enhanced RTMP video \(hvc1\)"),
    ("av1-enhanced-rtmp", b"\x90av01", r"enhanced RTMP video \(av01\)"),
    ("vp6", b"\x14\x00", r"VP6"),
    ("sorenson", b"\x12", r"H.263"),
    ("hevc-codec-12", b"\x1c\x00\x00\x00\x00", "HEVC"),
    ("frame-type-0", b"\x07\x01\x00\x00\x00", "frame type 0"),
    ("short-avc", b"\x17\x01\x00", "at least 5"),
    ("bad-packet-type", b"\x17\x07\x00\x00\x00", "packet type 7"),
    ("nal-overruns", b"\x17\x01\x00\x00\x00\x00\x00\x00\x09abc", "past the end"),
    ("nal-length-truncated", b"\x17\x01\x00\x00\x00\x00\x00", "truncated"),
    ("record-too-short", avc_header_tag(b"\x01\x42"), "too short"),
    ("record-version-2", avc_header_tag(b"\x02" + AVCC_640X360[1:]), "version 2"),
    (
        "nal-length-size-2",
        avc_header_tag(AVCC_640X360[:4] + b"\xfd" + AVCC_640X360[5:]),
        "length size 2",
    ),
    ("no-sps", avc_header_tag(AVCC_640X360[:5] + b"\xe0\x01\x00\x02\x68\xce"), "no SPS"),
    ("sps-overruns", avc_header_tag(AVCC_640X360[:6] + b"\xff\xff"), "does not fit"),
    ("no-pps-count", avc_header_tag(AVCC_640X360[: 8 + 0x19]), "no PPS count"),
    ("no-pps", avc_header_tag(AVCC_640X360[: 8 + 0x19] + b"\x00"), "no PPS"),
    ("sps-is-a-pps", avc_header_tag(AVCC_640X360[:8] + b"\x68" + AVCC_640X360[9:]), "type 8"),
    (
        "sps-truncated",
        avc_header_tag(AVCC_640X360[:6] + b"\x00\x04\x67\x42\xc0\x1e\x01\x00\x02\x68\xce"),
        "ends too early",
    ),
]


@pytest.mark.parametrize(
    ("body", "match"), [c[1:] for c in VIDEO_ERRORS], ids=[c[0] for c in VIDEO_ERRORS]
)
def test_refuses_video(body: bytes, match: str) -> None:
    with pytest.raises(FlvError, match=match):
        parse_video_tag(body)


AUDIO_ERRORS = [
    ("empty", b"", "empty"),
    ("mp3", b"\x2f\xff\xfb", r"MP3"),
    ("speex", b"\xb6\x00", "Speex"),
    ("enhanced-rtmp-audio", b"\x90Opus", "enhanced"),
    ("no-packet-type", b"\xaf", "packet type"),
    ("bad-packet-type", b"\xaf\x02", "packet type 2"),
    ("asc-too-short", b"\xaf\x00\x12", "too short"),
    (
        "asc-reserved-frequency",
        aac_header_tag(_bits((5, 2), (4, 13), (4, 2))),
        "frequency index 13",
    ),
    ("asc-object-type-0", aac_header_tag(_bits((5, 0), (4, 3), (4, 2))), "object type 0"),
    (
        "asc-reserved-channels",
        aac_header_tag(_bits((5, 2), (4, 3), (4, 9))),
        "channel configuration 9",
    ),
    ("asc-zero-frequency", aac_header_tag(_bits((5, 2), (4, 15), (24, 0), (4, 2))), "frequency 0"),
]


@pytest.mark.parametrize(
    ("body", "match"), [c[1:] for c in AUDIO_ERRORS], ids=[c[0] for c in AUDIO_ERRORS]
)
def test_refuses_audio(body: bytes, match: str) -> None:
    with pytest.raises(FlvError, match=match):
        parse_audio_tag(body)


def test_record_reports_its_first_sps() -> None:
    assert parse_avc_config(AVCC_640X360) == parse_sps(AVCC_640X360[8 : 8 + 0x19])


# -- costs bounded for hostile tags (issue 12, item 3) -----------------------------------


@pytest.mark.parametrize(
    ("nals", "match"),
    [
        (bytes(16 * 1024), "empty NAL unit"),  # 16 MiB of these took ~1-4 s to walk
        (avcc(IDR_NAL, b""), "empty NAL unit"),
        (avcc(*[b"\x09"] * (MAX_NALUS_PER_TAG + 1)), f"more than {MAX_NALUS_PER_TAG} NAL"),
    ],
    ids=["all-empty", "one-empty", "too-many"],
)
def test_refuses_nal_floods(nals: bytes, match: str) -> None:
    with pytest.raises(FlvError, match=match):
        parse_video_tag(b"\x17\x01\x00\x00\x00" + nals)


def test_a_tag_of_many_slices_passes() -> None:
    tag = parse_video_tag(b"\x17\x01\x00\x00\x00" + avcc(*[IDR_NAL] * MAX_NALUS_PER_TAG))
    assert isinstance(tag, AvcNalus) and tag.keyframe


def _worst_sps() -> bytes:
    """High 4:4:4 with all twelve scaling lists full of 63-bit codes: ~3.8 KiB, ~16 k bits
    read one by one by the old reader, each shifting the whole SPS as one integer."""
    fields = [(8, 244), (8, 0), (8, 40), ue(0), ue(3), (1, 0), ue(0), ue(0), (1, 0), (1, 1)]
    for i in range(12):
        fields += [(1, 1)] + [se(1 << 30)] * (16 if i < 6 else 64)  # next_scale stays 8
    fields += [ue(0), ue(0), ue(0), ue(1), (1, 0), ue(39), ue(22), (1, 1), (1, 1), (1, 0)]
    return b"\x67" + _bits(*fields, (1, 1))


def test_sps_of_long_codes_parses_in_bounded_time() -> None:
    """Before: 8.4 ms here (20-26 ms on the machine of issue 12) per 4 KiB sequence header;
    after: 0.45 ms. A publisher may send a sequence header with every message."""
    nal = _worst_sps()
    assert 3500 < len(nal) <= MAX_SPS_BYTES
    costs = []
    for _ in range(5):
        start = time.thread_time()
        info = parse_sps(nal)
        costs.append(time.thread_time() - start)
    assert info == SpsInfo(640, 368, 244, 40)
    assert min(costs) < 0.003, f"{min(costs) * 1000:.1f} ms"


class _ReferenceBits:
    """The old reader, one bit at a time over one big integer: the semantics to keep."""

    def __init__(self, data: bytes) -> None:
        self.value, self.size, self.pos = int.from_bytes(data, "big"), len(data) * 8, 0

    def u(self, n: int) -> int:
        if self.pos + n > self.size:
            raise FlvError("SPS ends too early")
        self.pos += n
        return (self.value >> (self.size - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise FlvError("exp-Golomb code longer than 32 bits in SPS")
        return (1 << zeros) - 1 + self.u(zeros)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=24), st.lists(st.integers(-1, 33), max_size=40))
def test_bit_reader_reads_what_the_reference_reads(data: bytes, ops: list[int]) -> None:
    """`ops`: -1 reads an exp-Golomb code, n >= 0 reads n bits."""
    ours, ref = _Bits(data), _ReferenceBits(data)
    for op in ops:
        results = []
        for reader in (ours, ref):
            try:
                results.append(reader.ue() if op < 0 else reader.u(op))
            except FlvError as exc:
                results.append(str(exc))
        assert results[0] == results[1]
        if isinstance(results[0], str):
            break
        assert ours.pos == ref.pos
