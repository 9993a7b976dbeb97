"""FLV audio/video tag bodies as RTMP carries them: H.264 (AVC) video and AAC audio.

Video tag body (codec id 7):

    byte 0     frame type (4 bits: 1 key, 2 inter, 5 info) | codec id (4 bits)
    byte 1     AVC packet type: 0 sequence header, 1 NAL units, 2 end of sequence
    bytes 2-4  composition time offset, signed 24-bit ms (pts = dts + cts)
    rest       0: AVCDecoderConfigurationRecord; 1: NAL units with 4-byte lengths

Audio tag body (sound format 10):

    byte 0     sound format (4 bits) | rate | size | channels (ignored for AAC)
    byte 1     AAC packet type: 0 AudioSpecificConfig, 1 raw frame
    rest       the config or the frame

Other codecs, and enhanced RTMP (HEVC/AV1/VP9 with FourCCs), are refused with `FlvError`.
The SPS is parsed far enough for the coded size, cropping, profile and level.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import IntEnum

from pipeline.errors import FlvError

logger = logging.getLogger(__name__)

AVC_CODEC_ID = 7
AAC_SOUND_FORMAT = 10
MAX_MACROBLOCKS_PER_SIDE = 1024  # 16384 pixels
MAX_SPS_BYTES = 4096  # far more than the fields up to the cropping window can take
# NAL units in one video tag: AUD, SPS, PPS, SEI and slices; encoders that slice per
# macroblock row reach ~135 at 2160p. Each costs a step of pure-Python parsing: 16 MiB of
# 1-byte NAL units took ~1 s of the shared event loop.
MAX_NALUS_PER_TAG = 1024

VIDEO_CODECS = {
    1: "JPEG",
    2: "Sorenson H.263",
    3: "Screen video",
    4: "VP6",
    5: "VP6 with alpha",
    6: "Screen video 2",
    7: "AVC",
    12: "HEVC (non-standard)",
}
SOUND_FORMATS = {
    0: "linear PCM",
    1: "ADPCM",
    2: "MP3",
    3: "linear PCM LE",
    4: "Nellymoser 16 kHz",
    5: "Nellymoser 8 kHz",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    9: "enhanced RTMP audio",
    10: "AAC",
    11: "Speex",
    14: "MP3 8 kHz",
    15: "device-specific",
}
AAC_SAMPLE_RATES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip
AAC_CHANNELS = (0, 1, 2, 3, 4, 5, 6, 8)  # by channelConfiguration; 0 = defined in a PCE
HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


class VideoFrameType(IntEnum):
    KEY = 1
    INTER = 2
    DISPOSABLE_INTER = 3
    GENERATED_KEY = 4
    INFO = 5


@dataclass(frozen=True, slots=True)
class SpsInfo:
    width: int
    height: int
    profile_idc: int
    level_idc: int


@dataclass(frozen=True, slots=True)
class AvcSequenceHeader:
    record: bytes  # the AVCDecoderConfigurationRecord, as sent
    sps: SpsInfo


@dataclass(frozen=True, slots=True)
class AvcNalus:
    keyframe: bool
    composition_time_ms: int
    data: bytes  # NAL units, each behind a 4-byte big-endian length


@dataclass(frozen=True, slots=True)
class AvcEndOfSequence:
    pass


@dataclass(frozen=True, slots=True)
class AacInfo:
    object_type: int
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class AacSequenceHeader:
    config: bytes  # the AudioSpecificConfig, as sent
    info: AacInfo


@dataclass(frozen=True, slots=True)
class AacFrame:
    data: bytes


VideoTag = AvcSequenceHeader | AvcNalus | AvcEndOfSequence
AudioTag = AacSequenceHeader | AacFrame


def parse_video_tag(body: bytes) -> VideoTag | None:
    """Parse one video tag body; None for info/command frames, which carry no picture."""
    if not body:
        raise FlvError("empty video tag")
    if body[0] & 0x80:
        fourcc = body[1:5]
        name = fourcc.decode("ascii") if fourcc.isalnum() and len(fourcc) == 4 else "?"
        raise FlvError(f"enhanced RTMP video ({name}) is not supported; send H.264")
    frame_type = body[0] >> 4
    codec_id = body[0] & 0x0F
    if codec_id != AVC_CODEC_ID:
        name = VIDEO_CODECS.get(codec_id, "unknown")
        raise FlvError(f"video codec {codec_id} ({name}) is not supported; send H.264")
    if frame_type == VideoFrameType.INFO:
        return None
    if frame_type not in (1, 2, 3, 4):
        raise FlvError(f"invalid video frame type {frame_type}")
    if len(body) < 5:
        raise FlvError(f"AVC video tag of {len(body)} bytes, want at least 5")
    packet_type = body[1]
    cts = int.from_bytes(body[2:5], "big", signed=True)
    payload = bytes(body[5:])
    if packet_type == 0:
        return AvcSequenceHeader(payload, parse_avc_config(payload))
    if packet_type == 1:
        check_avcc_framing(payload)
        keyframe = frame_type in (VideoFrameType.KEY, VideoFrameType.GENERATED_KEY)
        return AvcNalus(keyframe, cts, payload)
    if packet_type == 2:
        return AvcEndOfSequence()
    raise FlvError(f"invalid AVC packet type {packet_type}")


def parse_audio_tag(body: bytes) -> AudioTag:
    if not body:
        raise FlvError("empty audio tag")
    sound_format = body[0] >> 4
    if sound_format != AAC_SOUND_FORMAT:
        name = SOUND_FORMATS.get(sound_format, "unknown")
        raise FlvError(f"audio format {sound_format} ({name}) is not supported; send AAC")
    if len(body) < 2:
        raise FlvError("AAC audio tag without a packet type")
    packet_type = body[1]
    payload = bytes(body[2:])
    if packet_type == 0:
        return AacSequenceHeader(payload, parse_audio_specific_config(payload))
    if packet_type == 1:
        return AacFrame(payload)
    raise FlvError(f"invalid AAC packet type {packet_type}")


def check_avcc_framing(data: bytes) -> None:
    """Every NAL unit's 4-byte length must land exactly on the end of the data; no NAL unit
    is empty, and there are at most `MAX_NALUS_PER_TAG` of them."""
    pos = 0
    end = len(data)
    count = 0
    while pos < end:
        if pos + 4 > end:
            raise FlvError("truncated NAL unit length")
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 0:
            raise FlvError("empty NAL unit in the video tag")
        count += 1
        if count > MAX_NALUS_PER_TAG:
            raise FlvError(f"more than {MAX_NALUS_PER_TAG} NAL units in one video tag")
        pos += 4 + size
        if pos > end:
            raise FlvError("NAL unit runs past the end of the video tag")


def parse_avc_config(record: bytes) -> SpsInfo:
    """Validate an AVCDecoderConfigurationRecord; return what its first SPS says."""
    if len(record) < 7:
        raise FlvError(f"AVC decoder configuration of {len(record)} bytes is too short")
    if record[0] != 1:
        raise FlvError(f"AVC decoder configuration version {record[0]}, want 1")
    length_size = (record[4] & 0x03) + 1
    if length_size != 4:
        raise FlvError(f"NAL length size {length_size} is not supported, want 4")
    sps_list, pos = _parameter_sets(record, 6, record[5] & 0x1F, "SPS", 7)
    if pos >= len(record):
        raise FlvError("AVC decoder configuration has no PPS count")
    _, pos = _parameter_sets(record, pos + 1, record[pos], "PPS", 8)
    return parse_sps(sps_list[0])


def _parameter_sets(
    record: bytes, pos: int, count: int, what: str, nal_type: int
) -> tuple[list[bytes], int]:
    if count == 0:
        raise FlvError(f"AVC decoder configuration has no {what}")
    sets: list[bytes] = []
    for _ in range(count):
        if pos + 2 > len(record):
            raise FlvError(f"truncated {what} length")
        n = int.from_bytes(record[pos : pos + 2], "big")
        pos += 2
        if n == 0 or pos + n > len(record):
            raise FlvError(f"{what} of {n} bytes does not fit the configuration")
        nal = bytes(record[pos : pos + n])
        if nal[0] & 0x1F != nal_type:
            raise FlvError(f"{what} entry is a NAL unit of type {nal[0] & 0x1F}")
        sets.append(nal)
        pos += n
    return sets, pos


class _Bits:
    """Bit reader over an RBSP (emulation prevention bytes already removed). A read looks
    only at the bytes it covers, and an exp-Golomb code is read whole: holding the RBSP as
    one integer made every read shift a 32 k-bit number, and codes were read a bit at a
    time (a 4 KiB SPS of long codes: ~16 k shifts)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data) * 8
        self.pos = 0

    def _peek(self, start: int, n: int) -> int:
        """`n` bits from bit `start` (the caller checked they are there)."""
        end = start + n
        last_byte = (end + 7) >> 3
        window = int.from_bytes(self.data[start >> 3 : last_byte], "big")
        return (window >> ((last_byte << 3) - end)) & ((1 << n) - 1)

    def u(self, n: int) -> int:
        start = self.pos
        if start + n > self.size:
            raise FlvError("SPS ends too early")
        self.pos = start + n
        return self._peek(start, n)

    def flag(self) -> bool:
        return self.u(1) == 1

    def ue(self) -> int:
        start = self.pos
        span = min(64, self.size - start)  # 31 zeros, the 1, 31 bits: 63 at most
        head = self._peek(start, span) if span > 0 else 0
        zeros = span - head.bit_length()
        if zeros > 31:
            raise FlvError("exp-Golomb code longer than 32 bits in SPS")
        width = 2 * zeros + 1
        if head == 0 or width > span:
            raise FlvError("SPS ends too early")
        self.pos = start + width
        return (head >> (span - width)) - 1

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def unescape_rbsp(nal: bytes) -> bytes:
    """Drop the emulation prevention byte of every 00 00 03."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def parse_sps(nal: bytes) -> SpsInfo:
    """Width and height (after cropping), profile and level of an H.264 SPS NAL unit."""
    if len(nal) < 4 or nal[0] & 0x1F != 7:
        raise FlvError("not an SPS NAL unit")
    bits = _Bits(unescape_rbsp(nal[1:MAX_SPS_BYTES]))
    profile_idc = bits.u(8)
    bits.u(8)  # constraint flags
    level_idc = bits.u(8)
    bits.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = False
    if profile_idc in HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc > 3:
            raise FlvError(f"invalid chroma_format_idc {chroma_format_idc}")
        if chroma_format_idc == 3:
            separate_colour_plane = bits.flag()
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.flag()  # qpprime_y_zero_transform_bypass_flag
        if bits.flag():  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma_format_idc == 3 else 8):
                if bits.flag():
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.flag()  # delta_pic_order_always_zero_flag
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        cycle = bits.ue()
        if cycle > 255:
            raise FlvError(f"num_ref_frames_in_pic_order_cnt_cycle {cycle} > 255")
        for _ in range(cycle):
            bits.se()
    elif poc_type != 2:
        raise FlvError(f"invalid pic_order_cnt_type {poc_type}")
    bits.ue()  # max_num_ref_frames
    bits.flag()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bits.flag()
    if not frame_mbs_only:
        bits.flag()  # mb_adaptive_frame_field_flag
    bits.flag()  # direct_8x8_inference_flag
    crop_left = crop_right = crop_top = crop_bottom = 0
    if bits.flag():  # frame_cropping_flag
        crop_left, crop_right, crop_top, crop_bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()

    height_mbs = height_map_units * (1 if frame_mbs_only else 2)
    if width_mbs > MAX_MACROBLOCKS_PER_SIDE or height_mbs > MAX_MACROBLOCKS_PER_SIDE:
        raise FlvError(f"picture of {width_mbs}x{height_mbs} macroblocks is too large")
    if chroma_format_idc == 0 or separate_colour_plane:
        crop_x, crop_y = 1, 1
    else:
        crop_x = 1 if chroma_format_idc == 3 else 2
        crop_y = 2 if chroma_format_idc == 1 else 1
    crop_y *= 1 if frame_mbs_only else 2
    width = width_mbs * 16 - crop_x * (crop_left + crop_right)
    height = height_mbs * 16 - crop_y * (crop_top + crop_bottom)
    if width <= 0 or height <= 0:
        raise FlvError("SPS cropping leaves no picture")
    return SpsInfo(width, height, profile_idc, level_idc)


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            next_scale = (last + bits.se() + 256) % 256
        if next_scale != 0:
            last = next_scale


def parse_audio_specific_config(config: bytes) -> AacInfo:
    """Object type, output sample rate and channel count of an AAC AudioSpecificConfig."""
    if len(config) < 2:
        raise FlvError(f"AudioSpecificConfig of {len(config)} bytes is too short")
    bits = _Bits(config[:16])
    object_type = _audio_object_type(bits)
    sample_rate = _sampling_frequency(bits)
    channel_config = bits.u(4)
    if channel_config >= len(AAC_CHANNELS):
        raise FlvError(f"reserved AAC channel configuration {channel_config}")
    if object_type in (5, 29):  # SBR / PS: the extension rate is the output rate
        sample_rate = _sampling_frequency(bits)
        object_type = _audio_object_type(bits)
    return AacInfo(object_type, sample_rate, AAC_CHANNELS[channel_config])


def _audio_object_type(bits: _Bits) -> int:
    object_type = bits.u(5)
    if object_type == 31:
        object_type = 32 + bits.u(6)
    if object_type == 0:
        raise FlvError("AAC audio object type 0 is invalid")
    return object_type


def _sampling_frequency(bits: _Bits) -> int:
    index = bits.u(4)
    if index == 15:
        rate = bits.u(24)
    elif index < len(AAC_SAMPLE_RATES):
        rate = AAC_SAMPLE_RATES[index]
    else:
        raise FlvError(f"reserved AAC sampling frequency index {index}")
    if rate == 0:
        raise FlvError("AAC sampling frequency 0")
    return rate
