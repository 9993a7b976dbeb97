"""Codec configuration parsers fed generated and broken input, checked against the spec.

An SPS is written field by field from random values (H.264 7.3.2.1.1, emulation prevention
bytes included) and `parse_sps` must report the size the spec's cropping rules give, or
refuse exactly the pictures onair refuses (too large, cropped to nothing). An
AVCDecoderConfigurationRecord is assembled from such SPSs and PPSs, then perhaps truncated or
given a wrong version or NAL length size; AVCC framing is checked against a plain splitter.
Only `FlvError` may come out.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rtmp.flv import (
    HIGH_PROFILES,
    MAX_MACROBLOCKS_PER_SIDE,
    MAX_NALUS_PER_TAG,
    AvcNalus,
    AvcSequenceHeader,
    SpsInfo,
    check_avcc_framing,
    parse_avc_config,
    parse_sps,
    parse_video_tag,
)
from pipeline.errors import FlvError

FUZZ = settings(max_examples=100, deadline=None)


class _BitWriter:
    def __init__(self) -> None:
        self.value = 0
        self.size = 0

    def u(self, width: int, value: int) -> None:
        self.value = (self.value << width) | value
        self.size += width

    def ue(self, value: int) -> None:
        width = (value + 1).bit_length()
        self.u(2 * width - 1, value + 1)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        self.u(1, 1)  # rbsp_stop_one_bit, then zero bits to the byte boundary
        pad = -self.size % 8
        return (self.value << pad).to_bytes((self.size + pad) // 8, "big")


def escape(rbsp: bytes) -> bytes:
    """Emulation prevention (H.264 7.4.1): 00 00 followed by 00-03 gets a 03 in between."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


@dataclass(frozen=True)
class GeneratedSps:
    nal: bytes
    expected: SpsInfo | None  # None: onair must refuse it


@st.composite
def sps_units(draw: st.DrawFn) -> GeneratedSps:
    bits = _BitWriter()
    profile = draw(st.sampled_from([66, 77, 88, 100, 110, 122, 244, 44, 83, 118, 128]))
    level = draw(st.integers(0, 255))
    bits.u(8, profile)
    bits.u(8, draw(st.integers(0, 255)))  # constraint flags
    bits.u(8, level)
    bits.ue(draw(st.integers(0, 31)))  # seq_parameter_set_id
    chroma, separate_planes = 1, False
    if profile in HIGH_PROFILES:
        chroma = draw(st.integers(0, 3))
        bits.ue(chroma)
        if chroma == 3:
            separate_planes = draw(st.booleans())
            bits.u(1, separate_planes)
        bits.ue(draw(st.integers(0, 6)))  # bit_depth_luma_minus8
        bits.ue(draw(st.integers(0, 6)))  # bit_depth_chroma_minus8
        bits.u(1, draw(st.integers(0, 1)))  # qpprime_y_zero_transform_bypass_flag
        scaling = draw(st.booleans())
        bits.u(1, scaling)
        if scaling:
            for i in range(12 if chroma == 3 else 8):
                present = draw(st.booleans())
                bits.u(1, present)
                if present:
                    deltas = draw(st.lists(st.integers(-128, 127), max_size=8))
                    last = next_scale = 8
                    for j in range(16 if i < 6 else 64):
                        if next_scale != 0:
                            delta = deltas[j] if j < len(deltas) else 0
                            bits.se(delta)
                            next_scale = (last + delta + 256) % 256
                        if next_scale != 0:
                            last = next_scale
    bits.ue(draw(st.integers(0, 12)))  # log2_max_frame_num_minus4
    poc_type = draw(st.integers(0, 2))
    bits.ue(poc_type)
    if poc_type == 0:
        bits.ue(draw(st.integers(0, 12)))
    elif poc_type == 1:
        bits.u(1, draw(st.integers(0, 1)))
        bits.se(draw(st.integers(-1000, 1000)))
        bits.se(draw(st.integers(-1000, 1000)))
        cycle = draw(st.lists(st.integers(-1000, 1000), max_size=6))
        bits.ue(len(cycle))
        for offset in cycle:
            bits.se(offset)
    bits.ue(draw(st.integers(0, 16)))  # max_num_ref_frames
    bits.u(1, draw(st.integers(0, 1)))  # gaps_in_frame_num_value_allowed_flag
    width_mbs = draw(st.integers(1, MAX_MACROBLOCKS_PER_SIDE + 40))
    height_units = draw(st.integers(1, MAX_MACROBLOCKS_PER_SIDE + 40))
    bits.ue(width_mbs - 1)
    bits.ue(height_units - 1)
    frame_mbs_only = draw(st.booleans())
    bits.u(1, frame_mbs_only)
    if not frame_mbs_only:
        bits.u(1, draw(st.integers(0, 1)))  # mb_adaptive_frame_field_flag
    bits.u(1, draw(st.integers(0, 1)))  # direct_8x8_inference_flag
    crop = draw(st.one_of(st.none(), st.tuples(*[st.integers(0, 300)] * 4)))
    bits.u(1, crop is not None)
    for value in crop or ():
        bits.ue(value)
    bits.u(1, 0)  # vui_parameters_present_flag
    nal = b"\x67" + escape(bits.rbsp())

    # the spec's cropping units (7.4.2.1.1, table 6-1), computed apart from the parser
    chroma_array_type = 0 if separate_planes else chroma
    sub_width = 1 if chroma == 3 else 2
    sub_height = 2 if chroma == 1 else 1
    unit_x = 1 if chroma_array_type == 0 else sub_width
    unit_y = (1 if chroma_array_type == 0 else sub_height) * (2 - frame_mbs_only)
    left, right, top, bottom = crop or (0, 0, 0, 0)
    height_mbs = height_units * (2 - frame_mbs_only)
    width = 16 * width_mbs - unit_x * (left + right)
    height = 16 * height_mbs - unit_y * (top + bottom)
    too_large = max(width_mbs, height_mbs) > MAX_MACROBLOCKS_PER_SIDE
    if too_large or width <= 0 or height <= 0:
        return GeneratedSps(nal, None)
    return GeneratedSps(nal, SpsInfo(width, height, profile, level))


@FUZZ
@given(sps_units())
def test_sps_parses_to_the_size_the_spec_gives(sps: GeneratedSps) -> None:
    if sps.expected is None:
        try:
            parse_sps(sps.nal)
        except FlvError:
            return
        raise AssertionError("an SPS onair must refuse was accepted")
    assert parse_sps(sps.nal) == sps.expected


@FUZZ
@given(sps_units(), st.integers(1, 400), st.integers(0, 255))
def test_damaged_sps_only_raises_flv_error(sps: GeneratedSps, cut: int, flip: int) -> None:
    damaged = bytearray(sps.nal[: max(4, len(sps.nal) - cut % len(sps.nal))])
    damaged[cut % len(damaged)] ^= flip
    try:
        info = parse_sps(bytes(damaged))
    except FlvError:
        return
    assert 0 < info.width <= 16 * MAX_MACROBLOCKS_PER_SIDE
    assert 0 < info.height <= 16 * MAX_MACROBLOCKS_PER_SIDE


def avc_record(
    sps_list: list[bytes], pps_list: list[bytes], version: int = 1, length_size: int = 4
) -> tuple[bytes, int]:
    """The record, and the offset where its last PPS ends (all of it the parser needs)."""
    record = bytearray(
        [version, 100, 0, 31, 0xFC | (length_size - 1), 0xE0 | (len(sps_list) & 0x1F)]
    )
    for sps in sps_list:
        record += len(sps).to_bytes(2, "big") + sps
    record.append(len(pps_list) & 0xFF)
    for pps in pps_list:
        record += len(pps).to_bytes(2, "big") + pps
    return bytes(record), len(record)


pps_units = st.binary(min_size=1, max_size=12).map(lambda b: b"\x68" + b)


@FUZZ
@given(
    st.lists(sps_units(), min_size=0, max_size=3),
    st.lists(pps_units, min_size=0, max_size=3),
    st.sampled_from([1, 1, 1, 0, 2]),
    st.sampled_from([4, 4, 4, 1, 2]),
    st.binary(max_size=8),
    st.one_of(st.none(), st.integers(0, 200)),
)
def test_avc_configuration_record(
    sps_list: list[GeneratedSps],
    pps_list: list[bytes],
    version: int,
    length_size: int,
    trailer: bytes,
    truncate_at: int | None,
) -> None:
    record, needed = avc_record([s.nal for s in sps_list], pps_list, version, length_size)
    record += trailer  # the high-profile extension (chroma format, bit depths) may follow
    if truncate_at is not None:
        record = record[:truncate_at]
    complete = truncate_at is None or truncate_at >= needed
    well_formed = complete and version == 1 and length_size == 4 and sps_list and pps_list
    expected = sps_list[0].expected if well_formed else None
    try:
        info = parse_avc_config(record)
    except FlvError:
        assert expected is None, "a well-formed record with a good first SPS was refused"
        return
    assert info == expected
    tag = parse_video_tag(b"\x17\x00\x00\x00\x00" + record)
    assert isinstance(tag, AvcSequenceHeader) and tag.record == record and tag.sps == info


def split_nal_units(data: bytes) -> list[bytes] | None:
    """AVCC framing read the plain way: None unless it splits into non-empty units exactly."""
    units = []
    rest = data
    while rest:
        size = int.from_bytes(rest[:4], "big")
        unit = rest[4 : 4 + size]
        if len(rest) < 4 or size == 0 or len(unit) < size:
            return None
        units.append(unit)
        rest = rest[4 + size :]
    return units if len(units) <= MAX_NALUS_PER_TAG else None


def frame(units: list[bytes]) -> bytes:
    return b"".join(len(u).to_bytes(4, "big") + u for u in units)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(st.binary(min_size=1, max_size=40), max_size=20).map(frame),
        st.tuples(
            st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=20).map(frame),
            st.integers(0, 1 << 16),
            st.integers(0, 255),
        ).map(lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1 :]),
    ),
    st.booleans(),
)
def test_avcc_framing_accepts_exactly_what_splits(data: bytes, keyframe: bool) -> None:
    units = split_nal_units(data)
    try:
        check_avcc_framing(data)
    except FlvError:
        assert units is None, "well-formed AVCC framing was refused"
        return
    assert units is not None and frame(units) == data
    tag = parse_video_tag(bytes([0x17 if keyframe else 0x27, 1, 0, 0, 0]) + data)
    assert tag == AvcNalus(keyframe, 0, data)


def test_nal_unit_cap_is_exact() -> None:
    units = [b"\x09"] * MAX_NALUS_PER_TAG
    check_avcc_framing(frame(units))
    assert split_nal_units(frame([*units, b"\x09"])) is None
