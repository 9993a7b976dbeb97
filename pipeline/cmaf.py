"""CMAF (fragmented MP4) boxes for low-latency HLS: one init segment per rendition and codec
configuration, and one `moof`+`mdat` fragment per part. Pure bytes, no muxer library: every
field is chosen here, so the output is a pure function of its input (a replay or a successor
worker writes the same bytes) and the timestamps are the pipeline's own.

    init = init_segment(video, audio)                  # ftyp + moov (avc1 + mp4a, mvex)
    part = fragment(number, video_samples, audio_samples, video_start_90k, audio_start)

- Track 1 is H.264 (`avc1`, parameter sets in the `avcC` only: samples carry no SPS, PPS or
  AUD), timescale 90 kHz, so `tfdt` is the source PTS clock the TS segments use too: part N
  of every rendition starts at the same time. (A rung that copies the source's own H.264
  keeps its B-frames: its `tfdt` is the first frame's decode time and the composition
  offsets are positive, so its first frame is shown at that same time.)
- Track 2 is AAC (`mp4a`, the AudioSpecificConfig in an `esds`), timescale = its sample rate,
  1024 samples a frame.
- `tfhd` uses default-base-is-moof (CMAF); `trun` v1 carries duration, size, flags and a
  signed composition offset per video sample.
A segment is its parts' fragments back to back (ISO/IEC 23000-19 §7.3.2: a CMAF fragment may
hold several chunks), so the whole segment and its parts are the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.errors import MediaError

VIDEO_TRACK = 1
AUDIO_TRACK = 2
VIDEO_TIMESCALE = 90_000
AAC_FRAME_SAMPLES = 1024

_NAL_SPS, _NAL_PPS, _NAL_AUD = 7, 8, 9
_SYNC_FLAGS = 0x02000000  # sample_depends_on = 2 (an IDR depends on nothing)
_NON_SYNC_FLAGS = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350)  # fmt: skip


@dataclass(frozen=True, slots=True)
class VideoTrack:
    avcc: bytes  # AVCDecoderConfigurationRecord
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class AudioTrack:
    asc: bytes  # AudioSpecificConfig
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Sample:
    data: bytes  # video: 4-byte length-prefixed NAL units; audio: one raw AAC frame
    duration: int  # in the track's timescale
    keyframe: bool = True
    composition_offset: int = 0  # pts - dts, in the track's timescale


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


# --- H.264 and AAC configuration -------------------------------------------------------


def split_annexb(annexb: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (start codes and trailing zeros removed)."""
    nals: list[bytes] = []
    pos = annexb.find(b"\x00\x00\x01")
    while pos >= 0:
        start = pos + 3
        end = annexb.find(b"\x00\x00\x01", start)
        nal = annexb[start:] if end < 0 else annexb[start:end]
        nal = nal.rstrip(b"\x00") if end >= 0 else nal
        if nal:
            nals.append(nal)
        pos = end
    return nals


def avcc_from_annexb(annexb: bytes) -> bytes:
    """The avcC record of the SPS and PPS an encoder put in its first access unit."""
    nals = split_annexb(annexb)
    sps = [n for n in nals if n[0] & 0x1F == _NAL_SPS]
    pps = [n for n in nals if n[0] & 0x1F == _NAL_PPS]
    if not sps or not pps or len(sps[0]) < 4:
        raise MediaError("the first access unit carries no SPS and PPS")
    first = sps[0]
    out = bytes([1, first[1], first[2], first[3], 0xFF, 0xE0 | len(sps)])
    for nal in sps:
        out += struct.pack(">H", len(nal)) + nal
    out += bytes([len(pps)])
    for nal in pps:
        out += struct.pack(">H", len(nal)) + nal
    return out


def annexb_from_sample(sample: bytes) -> bytes:
    """An AVCC access unit (4-byte NAL lengths, as FLV and `avc1` samples carry it) as an
    Annex B byte stream: each NAL unit behind a start code."""
    out: list[bytes] = []
    pos = 0
    while pos + 4 <= len(sample):
        size = int.from_bytes(sample[pos : pos + 4], "big")
        out.append(b"\x00\x00\x00\x01" + sample[pos + 4 : pos + 4 + size])
        pos += 4 + size
    if pos != len(sample):
        raise MediaError("an access unit's NAL lengths do not add up to its size")
    return b"".join(out)


def annexb_parameter_sets(avcc: bytes) -> bytes:
    """The SPS and PPS of an avcC record, each behind a start code (what an encoder puts in
    front of an IDR access unit)."""
    out: list[bytes] = []
    pos = 5
    for _ in range(2):  # the SPS list, then the PPS list
        if pos >= len(avcc):
            raise MediaError("the avcC record ends before its parameter sets")
        count = avcc[pos] & (0x1F if pos == 5 else 0xFF)
        pos += 1
        for _ in range(count):
            size = int.from_bytes(avcc[pos : pos + 2], "big")
            nal = avcc[pos + 2 : pos + 2 + size]
            if size == 0 or len(nal) != size:
                raise MediaError("a parameter set does not fit the avcC record")
            out.append(b"\x00\x00\x00\x01" + nal)
            pos += 2 + size
    return b"".join(out)


def sample_from_annexb(annexb: bytes) -> bytes:
    """An access unit as an `avc1` sample: length-prefixed NAL units, parameter sets and
    access unit delimiters left out (they live in the avcC)."""
    return b"".join(
        struct.pack(">I", len(nal)) + nal
        for nal in split_annexb(annexb)
        if nal[0] & 0x1F not in (_NAL_SPS, _NAL_PPS, _NAL_AUD)
    )


def audio_object_type(asc: bytes) -> int:
    """MPEG-4 audio object type from an AudioSpecificConfig (2 = AAC-LC, 5 = SBR)."""
    if not asc:
        raise MediaError("empty AudioSpecificConfig")
    aot = asc[0] >> 3
    if aot == 31 and len(asc) >= 2:
        aot = 32 + (((asc[0] & 0x07) << 3) | (asc[1] >> 5))
    return aot


def codecs(avcc: bytes, asc: bytes | None) -> str:
    """RFC 6381 `codecs` of the tracks: `avc1.PPCCLL` from the avcC, `mp4a.40.<type>`."""
    video = f"avc1.{avcc[1:4].hex()}"
    return video if asc is None else f"{video},mp4a.40.{audio_object_type(asc)}"


def audio_track(asc: bytes) -> AudioTrack:
    """Sample rate and channels from an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1)."""
    if len(asc) < 2:
        raise MediaError("AudioSpecificConfig too short")
    bits = int.from_bytes(asc, "big")
    total = len(asc) * 8
    position = 5
    if asc[0] >> 3 == 31:
        position += 6
    index = (bits >> (total - position - 4)) & 0xF
    position += 4
    if index == 15:
        if total < position + 24 + 4:
            raise MediaError("AudioSpecificConfig too short for an explicit sample rate")
        rate = (bits >> (total - position - 24)) & 0xFFFFFF
        position += 24
    elif index < len(_AAC_RATES):
        rate = _AAC_RATES[index]
    else:
        raise MediaError(f"AudioSpecificConfig: reserved sampling frequency index {index}")
    channels = (bits >> (total - position - 4)) & 0xF if total >= position + 4 else 2
    return AudioTrack(asc, rate, channels or 2)


# --- init segment ----------------------------------------------------------------------


def init_segment(video: VideoTrack, audio: AudioTrack | None) -> bytes:
    """ftyp + moov: the tracks' sample descriptions, no samples (they come in fragments)."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41")
    traks = [_video_trak(video)]
    trexs = [_trex(VIDEO_TRACK)]
    if audio is not None:
        traks.append(_audio_trak(audio))
        trexs.append(_trex(AUDIO_TRACK))
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        struct.pack(">IH10x", 0x00010000, 0x0100),
        _MATRIX,
        bytes(24),
        struct.pack(">I", AUDIO_TRACK + 1),
    )  # fmt: skip
    return ftyp + box(b"moov", mvhd, *traks, box(b"mvex", *trexs))


def _trex(track_id: int) -> bytes:
    return full_box(b"trex", 0, 0, struct.pack(">IIIII", track_id, 1, 0, 0, 0))


def _tkhd(track_id: int, volume: int, width: int, height: int) -> bytes:
    return full_box(
        b"tkhd", 0, 3,
        struct.pack(">IIII", 0, 0, track_id, 0),
        struct.pack(">I8xhhH2x", 0, 0, 0, volume),
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )  # fmt: skip


def _mdia(timescale: int, handler: bytes, name: bytes, media_header: bytes, stsd: bytes) -> bytes:
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, handler), name + b"\x00")
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        stsd,
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    return box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl))


def _video_trak(video: VideoTrack) -> bytes:
    avc1 = box(
        b"avc1",
        struct.pack(">6xH16x", 1),
        struct.pack(">HHIIIH", video.width, video.height, 0x00480000, 0x00480000, 0, 1),
        bytes(32),
        struct.pack(">Hh", 0x0018, -1),
        box(b"avcC", video.avcc),
    )
    stsd = full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1)
    vmhd = full_box(b"vmhd", 0, 1, bytes(8))
    mdia = _mdia(VIDEO_TIMESCALE, b"vide", b"VideoHandler", vmhd, stsd)
    return box(b"trak", _tkhd(VIDEO_TRACK, 0, video.width, video.height), mdia)


def _descriptor(tag: int, body: bytes) -> bytes:
    if len(body) > 0x0FFFFFFF:
        raise MediaError("descriptor too large")
    size = len(body)
    length = bytes(
        [0x80 | ((size >> 21) & 0x7F), 0x80 | ((size >> 14) & 0x7F), 0x80 | ((size >> 7) & 0x7F),
         size & 0x7F]
    )  # fmt: skip
    return bytes([tag]) + length + body


def _esds(asc: bytes) -> bytes:
    decoder_config = _descriptor(
        0x04, bytes([0x40, 0x15]) + bytes(3) + struct.pack(">II", 0, 0) + _descriptor(0x05, asc)
    )
    es = _descriptor(0x03, struct.pack(">HB", AUDIO_TRACK, 0) + decoder_config
                     + _descriptor(0x06, b"\x02"))  # fmt: skip
    return full_box(b"esds", 0, 0, es)


def _audio_trak(audio: AudioTrack) -> bytes:
    rate = audio.sample_rate if audio.sample_rate < 0x10000 else 0
    mp4a = box(
        b"mp4a",
        struct.pack(">6xH8x", 1),
        struct.pack(">HHHHI", audio.channels, 16, 0, 0, rate << 16),
        _esds(audio.asc),
    )
    stsd = full_box(b"stsd", 0, 0, struct.pack(">I", 1), mp4a)
    smhd = full_box(b"smhd", 0, 0, bytes(4))
    mdia = _mdia(audio.sample_rate, b"soun", b"SoundHandler", smhd, stsd)
    return box(b"trak", _tkhd(AUDIO_TRACK, 0x0100, 0, 0), mdia)


# --- fragments -------------------------------------------------------------------------


def fragment(
    number: int,
    video: Sequence[Sample],
    audio: Sequence[Sample],
    video_start: int,
    audio_start: int,
) -> bytes:
    """One `moof` + `mdat`: the video samples then the audio samples. `number` is the
    fragment's sequence number (> 0, increasing); the starts are the tracks' first decode
    times in their timescales."""
    trafs: list[tuple[int, int, Sequence[Sample], bool]] = []
    if video:
        trafs.append((VIDEO_TRACK, video_start, video, True))
    if audio:
        trafs.append((AUDIO_TRACK, audio_start, audio, False))
    if not trafs:
        raise MediaError("a fragment needs at least one sample")

    def moof(offsets: Iterable[int]) -> bytes:
        mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", number & 0xFFFFFFFF))
        return box(
            b"moof",
            mfhd,
            *(_traf(t, start, samples, is_video, offset)
              for (t, start, samples, is_video), offset in zip(trafs, offsets, strict=True)),
        )  # fmt: skip

    size = len(moof([0] * len(trafs)))
    offsets, position = [], size + 8
    for _, _, samples, _ in trafs:
        offsets.append(position)
        position += sum(len(s.data) for s in samples)
    payload = b"".join(s.data for _, _, samples, _ in trafs for s in samples)
    return moof(offsets) + box(b"mdat", payload)


def _traf(
    track_id: int, start: int, samples: Sequence[Sample], is_video: bool, data_offset: int
) -> bytes:
    tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", track_id))
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", max(0, start)))
    if is_video:
        rows = b"".join(
            struct.pack(
                ">IIIi",
                s.duration,
                len(s.data),
                _SYNC_FLAGS if s.keyframe else _NON_SYNC_FLAGS,
                s.composition_offset,
            )
            for s in samples
        )
        trun = full_box(b"trun", 1, 0x000F01, struct.pack(">Ii", len(samples), data_offset), rows)
    else:
        rows = b"".join(struct.pack(">II", s.duration, len(s.data)) for s in samples)
        trun = full_box(b"trun", 0, 0x000301, struct.pack(">Ii", len(samples), data_offset), rows)
    return box(b"traf", tfhd, tfdt, trun)
