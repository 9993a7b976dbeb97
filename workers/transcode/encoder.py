"""One GOP in, one HLS MPEG-TS segment of one rendition out: decode, scale, encode, mux.

The transcode core (core.py) keeps one `GopTranscoder` per rendition and drives it
synchronously::

    transcoder = GopTranscoder(ladder.get("480p30"))
    segment = transcoder.transcode(gop)  # EncodedSegment(data=b"G@...", width=852, ...)

- Decode: libavcodec's h264 decoder takes the AVCC access units exactly as FLV carried them,
  with the avcC record as extradata. It is created lazily and kept while the avcC stays the
  same; at the end of every GOP it is drained and reset, so B-frame reordering is resolved
  inside the GOP and no frame leaks into the next one. Frames stream through decode → scale →
  encode as the decoder releases them (in presentation order), so a GOP is never held
  decoded in memory.
- Frame rate: every `rendition.frame_step(fps)`-th frame is kept (60 → 30 keeps one in two).
- Scale: one swscale context per transcoder, bicubic (ffmpeg's default); never upscales.
- Encode: libx264, a fresh encoder per GOP, so every segment opens with an IDR frame and is
  a pure function of its GOP: any worker can take any GOP and a replay rewrites the same
  bytes. Opening x264 costs under 1 ms, noise next to encoding 2 s of video (see
  bench/transcode.py). CBR-like VBV: maxrate = bitrate, bufsize = 2 * bitrate;
  `tune=zerolatency` (no lookahead, no B-frames: onair is live).
- Audio: the AAC frames are copied; the MPEG-TS muxer writes their ADTS headers from the
  source's AudioSpecificConfig.
- Source: a rung that would come out at the source's own size and frame rate (720p30 from
  a 720p30 publisher) carries the source's H.264 as it came, not decoded or re-encoded, as
  Twitch's "Source" quality does (`copies_source`): the best picture the publisher sent, for
  no CPU, and its parts leave as soon as their frames arrive. It needs a profile every
  player decodes (Baseline, Main, High: 8-bit 4:2:0) and a known frame rate; the source's
  keyframes already start every GOP, so segments stay aligned with the other rungs. The
  rung's bitrate does not apply: the playlists' BANDWIDTH is measured from the segments.
- Mux: MPEG-TS in memory, 90 kHz, packets in dts order. Every packet keeps its source PTS
  (`mpegts_copyts`): segment N starts at the same PTS in every rendition and segments
  continue each other. The muxer's `max_delay` then only places the PCR that far ahead of
  the first DTS (never below zero) and lets audio frames share PES packets.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fractions import Fraction

import av
import av.error
from av.audio.stream import AudioStream
from av.codec.context import CodecContext
from av.packet import Packet
from av.stream import Stream
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame
from av.video.reformatter import Interpolation, VideoReformatter

from pipeline import cmaf
from pipeline.errors import MediaError
from pipeline.gop import Gop
from pipeline.ladder import Rendition
from pipeline.media import CodecConfig, MediaUnit, Track
from pipeline.timebase import CLOCK_90K, TIME_BASE_90K, bitrate_bps
from workers.transcode.parts import CmafPart, PartCutter

logger = logging.getLogger(__name__)

PIX_FMT = "yuv420p"
SCALER = Interpolation.BICUBIC
MUX_DELAY_90K = CLOCK_90K * 4 // 10  # PCR lead over the first DTS; audio PES span is half
_NAL_SPS = 7
_NAL_AUD = 9
_COLOR_RANGE_MPEG = 1  # AVCOL_RANGE_MPEG: limited ("tv") range
# profile_idc a source may be passed through with: Baseline (and Constrained Baseline), Main,
# High; High 10, 4:2:2 and 4:4:4 are transcoded (browsers' MSE refuse them)
_PLAYABLE_PROFILES = frozenset({66, 77, 100})


@dataclass(frozen=True, slots=True)
class EncodedSegment:
    """One MPEG-TS segment of one rendition, ready to store (`data` empty when the
    transcoder writes no MPEG-TS: the segment is its CMAF parts)."""

    data: bytes
    duration_90k: int
    width: int
    height: int
    fps: float
    bitrate_bps: int  # len(data) * 8 / duration
    codecs: str  # RFC 6381, e.g. "avc1.64001f,mp4a.40.2"


class GopTranscoder:
    """Turns GOPs of one source into segments of one rendition. Not thread-safe."""

    def __init__(
        self,
        rendition: Rendition,
        *,
        preset: str = "veryfast",
        threads: int = 1,
        source_passthrough: bool = False,
        ts_segments: bool = True,
    ):
        self.rendition = rendition
        self.preset = preset
        self.threads = threads
        self.source_passthrough = source_passthrough
        self.ts_segments = ts_segments  # False: no MPEG-TS muxed (CMAF parts only)
        self._decoder: VideoCodecContext | None = None
        self._decoder_avcc: bytes | None = None
        self._scaler = VideoReformatter()

    def transcode(self, gop: Gop) -> EncodedSegment:
        """Decode, scale, encode and mux one GOP; `MediaError` if it cannot be decoded."""
        encoding = self.begin(gop)
        encoding.feed(gop.units)
        return encoding.finish(gop.duration_90k)

    def begin(self, gop: Gop, part_target_90k: int = 0) -> GopEncoding:
        """Start a GOP whose units arrive in parts: `feed()` each part as it comes (its video
        is decoded, scaled and encoded at once), `finish()` when the GOP is complete. `gop`
        gives the stream, sequence, codec config and start; its units may be empty. With a
        `part_target_90k`, `ready_parts()` cuts the output into CMAF parts as it is encoded."""
        return GopEncoding(self, gop, part_target_90k)

    def _decoder_for(self, avcc: bytes) -> VideoCodecContext:
        """Lend the kept decoder when it fits (a GOP in progress holds it alone: GOPs of two
        streams arriving in parts at once must never share one), else open a new one."""
        if self._decoder is not None and avcc == self._decoder_avcc:
            decoder, self._decoder = self._decoder, None
            return decoder
        decoder = CodecContext.create("h264", "r")
        assert isinstance(decoder, VideoCodecContext)
        decoder.extradata = avcc
        decoder.thread_count = self.threads
        decoder.thread_type = "AUTO" if self.threads != 1 else "SLICE"
        try:
            decoder.open()
        except av.error.FFmpegError as exc:
            raise MediaError(f"the H.264 decoder refuses this avcC record: {exc}") from exc
        return decoder

    def _give_back(self, decoder: VideoCodecContext, avcc: bytes) -> None:
        """A drained decoder is kept for the next GOP of the same codec config."""
        self._decoder, self._decoder_avcc = decoder, avcc

    def _new_encoder(self, width: int, height: int, fps: float) -> VideoCodecContext:
        bitrate = self.rendition.bitrate_bps
        encoder = CodecContext.create("libx264", "w")
        assert isinstance(encoder, VideoCodecContext)
        encoder.width = width
        encoder.height = height
        encoder.pix_fmt = PIX_FMT
        encoder.time_base = TIME_BASE_90K
        encoder.framerate = Fraction(fps).limit_denominator(1001)
        encoder.bit_rate = bitrate
        encoder.gop_size = 100_000  # the only IDR is the first frame of this fresh encoder
        encoder.thread_count = self.threads
        encoder.options = {
            "preset": self.preset,
            "tune": "zerolatency",
            "profile": "high",
            "maxrate": str(bitrate),
            "bufsize": str(2 * bitrate),
            "sc_threshold": "0",
        }
        return encoder


class GopEncoding:
    """One GOP being encoded: units in (in parts or all at once), one segment out."""

    def __init__(self, owner: GopTranscoder, gop: Gop, part_target_90k: int = 0) -> None:
        self.owner = owner
        self.gop = gop
        self.run = _GopRun(owner, gop)
        self.copy = owner.source_passthrough and copies_source(owner.rendition, gop.config)
        self.decoder = None if self.copy else owner._decoder_for(gop.config.avc_config)
        self.audio: list[MediaUnit] = []
        self.video_units = 0
        self.failed = 0
        self.first_error = ""
        self.part_target_90k = part_target_90k  # > 0: CMAF parts are cut as frames come
        self.cutter: PartCutter | None = None
        self.last_parts: list[CmafPart] = []  # the parts `finish()` completed

    def ready_parts(self) -> list[CmafPart]:
        """The CMAF parts completed by what was fed so far (none without a part target)."""
        cutter = self._cutter()
        return [] if cutter is None else cutter.cut(self.run.packets, self.audio)

    def _cutter(self) -> PartCutter | None:
        if self.cutter is None and self.part_target_90k > 0 and self.run.started:
            width, height = self.run.size
            self.cutter = PartCutter(
                sequence=self.gop.sequence,
                part_target_90k=self.part_target_90k,
                frame_90k=round(CLOCK_90K / self.run.fps),
                width=width,
                height=height,
                asc=self.gop.config.aac_config,
            )
        return self.cutter

    def feed(self, units: Iterable[MediaUnit]) -> None:
        """Decode, scale and encode the part's video now; keep its audio for the mux. If this
        raises, the GOP is abandoned and its decoder with it (it is never given back)."""
        for unit in units:
            if unit.track is Track.AUDIO:
                self.audio.append(unit)
                continue
            self.video_units += 1
            if self.decoder is None:
                self.run.copy(unit)
                continue
            try:
                frames = self.decoder.decode(_packet(unit))
            except av.error.FFmpegError as exc:  # a broken access unit: skip it, go on
                self.failed += 1
                self.first_error = self.first_error or str(exc)
                continue
            self.run.take(frames)

    def finish(self, duration_90k: int) -> EncodedSegment:
        gop, owner = self.gop, self.owner
        if self.decoder is not None:
            try:
                self.run.take(self.decoder.decode(None))
                self.decoder.flush_buffers()
            except av.error.FFmpegError as exc:
                raise MediaError(f"GOP {gop.sequence}: draining the decoder failed: {exc}") from exc
            owner._give_back(self.decoder, gop.config.avc_config)
        if not self.run.started:
            raise MediaError(
                f"GOP {gop.sequence}: no frame decoded from {self.video_units} video packets"
                + (f" ({self.failed} refused, first: {self.first_error})" if self.failed else "")
            )
        if self.failed:
            logger.warning(
                "stream %s rendition %s GOP %d: %d of %d video packets failed to decode (%s)",
                gop.stream_id, owner.rendition.name, gop.sequence, self.failed,
                self.video_units, self.first_error,
            )  # fmt: skip
        self.run.gop = replace(gop, duration_90k=max(1, duration_90k))
        self.run.drain()
        cutter = self._cutter()
        if cutter is not None:
            # the parts run on decode time: a copied source's B-frames put its first dts
            # before the keyframe's pts (an encoded rung's dts is its pts)
            first = self.run.packets[0].dts if self.copy and self.run.packets else None
            end_90k = (gop.start_pts_90k if first is None else first) + max(1, duration_90k)
            self.last_parts = cutter.cut(self.run.packets, self.audio, end_90k=end_90k)
        return self.run.finish(self.audio)


class _GopRun:
    """The state of one GOP's encode: frames in, encoded packets out."""

    def __init__(self, owner: GopTranscoder, gop: Gop) -> None:
        self.owner = owner
        self.gop = gop
        source_fps = gop.config.fps
        if source_fps <= 0 and gop.duration_90k > 0:  # no frame rate in the metadata:
            source_fps = len(gop.video) * CLOCK_90K / gop.duration_90k  # count the frames
        if source_fps <= 0:  # ...nor a whole GOP to count (it arrives in parts)
            source_fps = 30.0
        self.step = owner.rendition.frame_step(source_fps)
        self.fps = source_fps / self.step
        self.encoder: VideoCodecContext | None = None
        self.size = (0, 0)
        self.packets: list[Packet[Stream]] = []
        self.index = 0  # frames seen in presentation order, from the keyframe on
        self.last_pts = -1
        self.dropped = 0
        self.copied = False  # the source's own access units are the output (`copy`)
        self._parameter_sets = b""

    @property
    def started(self) -> bool:
        """Some output exists: a frame was encoded, or a source access unit copied."""
        return self.encoder is not None or self.copied

    def copy(self, unit: MediaUnit) -> None:
        """Take a source access unit as it is (Annex B, the parameter sets in front of each
        keyframe, as x264 writes them). Frames shown before the GOP's keyframe (an open GOP's
        leading B-frames) are left out, as `take` leaves them out."""
        if unit.pts_90k < self.gop.start_pts_90k:
            self.dropped += 1
            return
        if not self.copied:
            config = self.gop.config
            self.size = (config.width, config.height)
            self._parameter_sets = cmaf.annexb_parameter_sets(config.avc_config)
            self.copied = True
        data = cmaf.annexb_from_sample(unit.payload)
        if unit.keyframe:  # after the access unit delimiter, which opens the frame, if any
            aud = len(data) > 4 and data[4] & 0x1F == _NAL_AUD
            cut = data.find(b"\x00\x00\x00\x01", 4) if aud else 0
            cut = len(data) if cut < 0 else cut
            data = data[:cut] + self._parameter_sets + data[cut:]
        packet = Packet(data)
        packet.pts = unit.pts_90k
        packet.dts = unit.dts_90k
        packet.time_base = TIME_BASE_90K
        packet.is_keyframe = unit.keyframe
        self.packets.append(packet)

    def take(self, frames: list[VideoFrame]) -> None:
        for frame in frames:
            pts = frame.pts
            if pts is None or pts < self.gop.start_pts_90k or pts <= self.last_pts:
                self.dropped += 1  # before the keyframe (open GOP) or out of order
                continue
            self.last_pts = pts
            keep = self.index % self.step == 0
            self.index += 1
            if keep:
                self._encode(frame)

    def _encode(self, frame: VideoFrame) -> None:
        if self.encoder is None:
            rendition = self.owner.rendition
            self.size = rendition.output_size(frame.width, frame.height)
            self.encoder = self.owner._new_encoder(*self.size, self.fps)
            _copy_color_tags(frame, self.encoder)
        width, height = self.size
        out = self.owner._scaler.reformat(
            frame, width, height, PIX_FMT, interpolation=SCALER, threads=self.owner.threads
        )
        out.pict_type = PictureType.NONE  # the source's frame types mean nothing to x264
        try:
            self.packets.extend(self.encoder.encode(out))
        except av.error.FFmpegError as exc:
            raise MediaError(f"GOP {self.gop.sequence}: x264 refused a frame: {exc}") from exc

    def drain(self) -> None:
        """Take the encoder's last packets (the GOP is complete)."""
        if self.encoder is None:  # copied: nothing is held back
            return
        try:
            self.packets.extend(self.encoder.encode(None))
        except av.error.FFmpegError as exc:
            raise MediaError(f"GOP {self.gop.sequence}: encoding failed: {exc}") from exc

    def finish(self, audio: list[MediaUnit]) -> EncodedSegment:
        assert self.started
        gop = self.gop
        first = bytes(self.packets[0]) if self.packets else b""
        try:
            data = self._mux(audio) if self.owner.ts_segments else b""
        except av.error.FFmpegError as exc:
            raise MediaError(f"GOP {gop.sequence}: encoding or muxing failed: {exc}") from exc
        width, height = self.size
        return EncodedSegment(
            data=data,
            duration_90k=gop.duration_90k,
            width=width,
            height=height,
            fps=self.fps,
            bitrate_bps=bitrate_bps(len(data), gop.duration_90k),
            codecs=codecs_string(first, gop.config.aac_config),
        )

    def _mux(self, audio: list[MediaUnit]) -> bytes:
        config = self.gop.config
        first_dts = min(
            [p.dts for p in self.packets if p.dts is not None] + [u.dts_90k for u in audio]
        )
        mux_delay_us = max(0, min(MUX_DELAY_90K, first_dts)) * 1_000_000 // CLOCK_90K
        buffer = io.BytesIO()
        options = {"mpegts_copyts": "1", "max_delay": str(mux_delay_us)}
        with av.open(buffer, "w", format="mpegts", options=options) as container:
            width, height = self.size
            video = container.add_mux_stream(
                "h264", rate=Fraction(self.fps), width=width, height=height
            )
            video.time_base = TIME_BASE_90K
            audio_stream = _add_aac(container, config) if config.aac_config and audio else None
            queue: list[tuple[int, int, Packet[Stream]]] = []
            for packet in self.packets:
                packet.stream = video
                queue.append((packet.dts or 0, 0, packet))
            if audio_stream is not None:
                for unit in audio:
                    packet = _packet(unit)
                    packet.stream = audio_stream
                    queue.append((unit.dts_90k, 1, packet))
            queue.sort(key=lambda item: (item[0], item[1]))
            for _, _, packet in queue:
                container.mux_one(packet)
        return buffer.getvalue()


def copies_source(rendition: Rendition, config: CodecConfig) -> bool:
    """Whether `rendition` would come out at the source's own size and frame rate, from a
    source any player decodes: then the source's H.264 is the rung's output, as it came."""
    avcc = config.avc_config
    if config.fps <= 0 or len(avcc) < 2 or avcc[1] not in _PLAYABLE_PROFILES:
        return False
    size = (config.width, config.height)
    return rendition.output_size(*size) == size and rendition.output_fps(config.fps) == config.fps


def _copy_color_tags(frame: VideoFrame, encoder: VideoCodecContext) -> None:
    """Carry the source's colour description into the output's VUI, as ffmpeg does. Scaling
    keeps primaries, transfer and matrix; it only turns full-range `yuvj*` into limited."""
    encoder.color_primaries = frame.color_primaries
    encoder.color_trc = frame.color_trc
    encoder.colorspace = frame.colorspace
    full_range_format = frame.format.name.startswith("yuvj")
    encoder.color_range = _COLOR_RANGE_MPEG if full_range_format else frame.color_range


def _add_aac(container: av.container.OutputContainer, config: CodecConfig) -> AudioStream:
    """An AAC stream whose codec parameters carry the source's AudioSpecificConfig.

    PyAV sets extradata only through a codec context, so the stream gets an AAC encoder that
    is opened (48 kHz stereo, always valid) and never used; the muxer builds every ADTS
    header from the ASC, not from these parameters.
    """
    stream = container.add_stream("aac", rate=48_000)
    stream.time_base = TIME_BASE_90K
    stream.codec_context.open()
    stream.codec_context.extradata = config.aac_config
    return stream


def _packet(unit: MediaUnit) -> Packet[Stream]:
    packet = Packet(unit.payload)
    packet.pts = unit.pts_90k
    packet.dts = unit.dts_90k
    packet.time_base = TIME_BASE_90K
    return packet


def codecs_string(video_access_unit: bytes, asc: bytes | None) -> str:
    """RFC 6381 `codecs` from an Annex B access unit holding the SPS and from the ASC:
    `avc1.PPCCLL` (profile_idc, constraint flags, level_idc) and `mp4a.40.<object type>`."""
    sps = find_nal(video_access_unit, _NAL_SPS)
    if sps is None or len(sps) < 4:
        raise MediaError("the encoder's first access unit carries no SPS")
    video = f"avc1.{sps[1:4].hex()}"
    if asc is None:
        return video
    return f"{video},mp4a.40.{audio_object_type(asc)}"


def find_nal(annexb: bytes, nal_type: int) -> bytes | None:
    """The first NAL unit of `nal_type` in an Annex B byte stream."""
    pos = annexb.find(b"\x00\x00\x01")
    while pos >= 0:
        start = pos + 3
        end = annexb.find(b"\x00\x00\x01", start)
        nal = annexb[start:] if end < 0 else annexb[start:end]
        if nal and nal[0] & 0x1F == nal_type:
            return nal.rstrip(b"\x00")
        pos = end
    return None


def audio_object_type(asc: bytes) -> int:
    """MPEG-4 audio object type from an AudioSpecificConfig (2 = AAC-LC, 5 = SBR)."""
    return cmaf.audio_object_type(asc)
