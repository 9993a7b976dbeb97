"""One GOP's encoded output cut into CMAF parts as the encoder produces it (low-latency HLS).

`PartCutter` reads the encoder's packets and the GOP's audio as they accumulate and hands out
`CmafPart`s of at most `part_target_90k` of video each (a part closes on the frame that would
take it past the target, so every part but the GOP's last is within one frame of the target:
the 85 % to 100 % rule of draft-pantos-hls-rfc8216bis §4.4.4.9). Audio frames go with the part
whose video span holds their dts; the last part takes the rest. Part 0 opens on the IDR
(INDEPENDENT=YES). The init segment is built from the first packet's SPS/PPS.

Video times are snapped to the rung's frame grid from the GOP's first frame (RTMP carries
milliseconds, so 30 fps arrives as 33, 33, 34 ms steps): 15 frames at 30 fps are exactly
0.5 s, parts are whole numbers of frames, and a dropped frame still leaves its gap. The
MPEG-TS segments keep the source's timestamps; the two never differ by more than half a frame.

    cutter = PartCutter(part_target_90k=45_000, frame_90k=3_000, ...)
    parts = cutter.cut(packets, audio)              # the parts complete so far
    parts += cutter.cut(packets, audio, end_90k=e)  # the GOP ended: everything left
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from av.packet import Packet
from av.stream import Stream

from pipeline import cmaf
from pipeline.errors import MediaError
from pipeline.media import MediaUnit

FRAGMENTS_PER_SEGMENT = 64  # mfhd numbers: segment N's part p is N * 64 + p + 1


@dataclass(frozen=True, slots=True)
class CmafPart:
    index: int
    data: bytes  # moof + mdat
    start_90k: int  # decode time of its first video frame
    duration_90k: int  # its video's span
    independent: bool  # opens on an IDR frame


@dataclass(frozen=True, slots=True)
class CmafInit:
    data: bytes
    name: str  # init-<digest>.mp4: the same tracks always get the same name
    codecs: str  # RFC 6381, e.g. "avc1.64001f,mp4a.40.2"


class PartCutter:
    """Cuts one GOP's encoder output into parts. Not thread-safe; one per GOP and rung."""

    def __init__(
        self,
        *,
        sequence: int,
        part_target_90k: int,
        frame_90k: int,
        width: int,
        height: int,
        asc: bytes | None,
    ) -> None:
        self.sequence = sequence
        self.part_target_90k = part_target_90k
        self.frame_90k = max(1, frame_90k)
        self.size = (width, height)
        self.audio_track = cmaf.audio_track(asc) if asc else None
        self.init: CmafInit | None = None
        self._origin: int | None = None  # the GOP's first frame's dts: the grid's zero
        self._video_done = 0  # packets already in a part
        self._audio_done = 0
        self._parts = 0

    def cut(
        self,
        packets: Sequence[Packet[Stream]],
        audio: Sequence[MediaUnit],
        *,
        end_90k: int | None = None,
    ) -> list[CmafPart]:
        """The parts complete in `packets` (everything left when `end_90k`, the GOP's end in
        the 90 kHz clock, is given). `packets` and `audio` only ever grow between calls."""
        if self.init is None and packets:
            self._make_init(bytes(packets[0]))
        out: list[CmafPart] = []
        while True:
            count = self._next_part(packets, final=end_90k is not None)
            if count == 0:
                break
            end = len(packets) == self._video_done + count and end_90k is not None
            out.append(self._part(packets, audio, count, end_90k if end else None))
        return out

    def _next_part(self, packets: Sequence[Packet[Stream]], *, final: bool) -> int:
        """How many packets the next part takes, 0 when it is not complete yet. A part's last
        frame counts as one nominal frame (its true length needs the next frame, which may
        be half a second away in the next chunk): the part goes out as soon as its last frame
        is encoded, and the cut depends only on the frames before it, so a GOP cut as it
        arrives and the same GOP cut whole give the same video parts (an audio frame that
        arrives after its video joins the next part). The next part's `tfdt` is its
        own first dts: at most a millisecond of overlap or gap from the source's clock."""
        first = self._video_done
        dts = [self._time(_dts(p)) for p in packets[first:]]
        total = 0  # the true durations of the frames before frame i
        for i in range(len(dts)):
            if i + 1 == len(dts) and final:
                return len(dts)
            if i > 0 and total + self.frame_90k > self.part_target_90k:
                return i
            if total + 2 * self.frame_90k > self.part_target_90k:
                return i + 1
            if i + 1 == len(dts):
                return 0
            total += dts[i + 1] - dts[i]
        return 0

    def _part(
        self,
        packets: Sequence[Packet[Stream]],
        audio: Sequence[MediaUnit],
        count: int,
        end_90k: int | None,
    ) -> CmafPart:
        first = self._video_done
        chosen = packets[first : first + count]
        dts = [self._time(_dts(p)) for p in chosen]
        if end_90k is None:
            following = dts[-1] + self.frame_90k
        else:  # the GOP's last frame lasts to the GOP's end (one frame when that is unknown)
            end = self._time(end_90k)
            following = end if end > dts[-1] else dts[-1] + self.frame_90k
        video = [
            cmaf.Sample(
                data=cmaf.sample_from_annexb(bytes(p)),
                duration=max(1, (dts[i + 1] if i + 1 < len(dts) else following) - dts[i]),
                keyframe=p.is_keyframe,
                composition_offset=(self._time(p.pts) if p.pts is not None else dts[i]) - dts[i],
            )
            for i, p in enumerate(chosen)
        ]
        self._video_done += count
        audio_units = audio[self._audio_done :]
        if end_90k is None:
            audio_units = [u for u in audio_units if u.dts_90k < following]
        self._audio_done += len(audio_units)
        audio_samples, audio_start = self._audio(audio_units)
        index = self._parts
        self._parts += 1
        data = cmaf.fragment(
            self.sequence * FRAGMENTS_PER_SEGMENT + index + 1,
            video,
            audio_samples,
            dts[0],
            audio_start,
        )
        return CmafPart(
            index=index,
            data=data,
            start_90k=dts[0],
            duration_90k=following - dts[0],
            independent=index == 0 and chosen[0].is_keyframe,
        )

    def _time(self, time_90k: int) -> int:
        """`time_90k` on the frame grid that starts at the GOP's first frame."""
        if self._origin is None:
            self._origin = time_90k
        frames = round((time_90k - self._origin) / self.frame_90k)
        return self._origin + frames * self.frame_90k

    def _audio(self, units: Sequence[MediaUnit]) -> tuple[list[cmaf.Sample], int]:
        track = self.audio_track
        if track is None or not units:
            return [], 0
        start = units[0].dts_90k * track.sample_rate // cmaf.VIDEO_TIMESCALE
        samples = [cmaf.Sample(u.payload, cmaf.AAC_FRAME_SAMPLES) for u in units]
        return samples, start

    def _make_init(self, first_access_unit: bytes) -> None:
        width, height = self.size
        video = cmaf.VideoTrack(cmaf.avcc_from_annexb(first_access_unit), width, height)
        data = cmaf.init_segment(video, self.audio_track)
        digest = hashlib.sha256(data).hexdigest()[:16]
        codecs = cmaf.codecs(video.avcc, self.audio_track.asc if self.audio_track else None)
        self.init = CmafInit(data, f"init-{digest}.mp4", codecs)


def _dts(packet: Packet[Stream]) -> int:
    value = packet.dts if packet.dts is not None else packet.pts
    if value is None:
        raise MediaError("an encoded packet without a timestamp")
    return value
