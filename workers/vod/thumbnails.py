"""The VOD's images: the poster and the thumbnail sprite (`ThumbnailGrid` places the tiles
and writes `thumbs.vtt`), from keyframes decoded and encoded as JPEG with PyAV."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame

from pipeline.errors import MediaError
from workers.vod.chapters import vtt_time

THUMB_WIDTH = 160
THUMB_COLUMNS = 10
THUMB_INTERVAL_S = 10.0
POSTER_MAX_WIDTH = 1280
JPEG_MAX_SIDE = 65_000  # JPEG's limit is 65535 pixels a side


@dataclass(frozen=True, slots=True)
class ThumbnailGrid:
    """Which moments the sprite shows and where each tile sits."""

    interval_ms: int
    count: int
    width: int
    height: int
    columns: int

    @classmethod
    def plan(
        cls, total_ms: int, source_size: tuple[int, int], interval_s: float = THUMB_INTERVAL_S
    ) -> ThumbnailGrid:
        source_width, source_height = source_size
        height = max(2, round(THUMB_WIDTH * source_height / source_width / 2) * 2)
        interval_ms = max(1, round(interval_s * 1000))
        max_tiles = (JPEG_MAX_SIDE // height) * THUMB_COLUMNS
        interval_ms = max(interval_ms, math.ceil(total_ms / max_tiles))  # a very long stream
        count = max(1, math.ceil(total_ms / interval_ms))
        return cls(interval_ms, count, THUMB_WIDTH, height, min(THUMB_COLUMNS, count))

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.columns)

    def vtt(self, total_ms: int, image: str = "thumbs.jpg") -> str:
        lines = ["WEBVTT", ""]
        for k in range(self.count):
            start = k * self.interval_ms
            end = min(total_ms, start + self.interval_ms)
            x, y = (k % self.columns) * self.width, (k // self.columns) * self.height
            lines += [
                f"{vtt_time(start)} --> {vtt_time(end)}",
                f"{image}#xywh={x},{y},{self.width},{self.height}",
                "",
            ]
        return "\n".join(lines)


def first_frame(segment: bytes, fmt: str = "mpegts") -> VideoFrame:
    """The segment's first video frame (segments open on an IDR frame): an MPEG-TS segment,
    or (`fmt="mp4"`) a CMAF init segment followed by a segment."""
    try:
        with av.open(io.BytesIO(segment), mode="r", format=fmt) as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            for frame in container.decode(stream):
                return frame
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError(f"no frame decoded from a segment: {exc}") from exc
    raise MediaError("no frame decoded from a segment")


def encode_jpeg(frame: VideoFrame, width: int, height: int, qscale: int = 3) -> bytes:
    image = frame.reformat(width, height, "yuvj420p")
    encoder = CodecContext.create("mjpeg", "w")
    assert isinstance(encoder, VideoCodecContext)
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    # fixed quality, as `ffmpeg -q:v N`: global_quality = N * FF_QP2LAMBDA
    encoder.options = {"flags": "+qscale", "global_quality": str(qscale * 118)}
    try:
        packets = encoder.encode(image) + encoder.encode(None)
    except av.error.FFmpegError as exc:
        raise MediaError(f"JPEG encoding failed: {exc}") from exc
    return b"".join(bytes(p) for p in packets)


def compose_sprite(tiles: Sequence[VideoFrame], grid: ThumbnailGrid) -> VideoFrame:
    """Tiles (already `grid.width` x `grid.height`, yuv420p) in a grid, row by row; empty
    cells black."""
    width, height = grid.columns * grid.width, grid.rows * grid.height
    sprite = VideoFrame(width, height, "yuv420p")
    for plane_index, plane in enumerate(sprite.planes):
        shift = 0 if plane_index == 0 else 1
        tile_w, tile_h = grid.width >> shift, grid.height >> shift
        buffer = bytearray((16 if plane_index == 0 else 128,)) * plane.buffer_size
        stride = plane.line_size
        for k, tile in enumerate(tiles):
            source = tile.planes[plane_index]
            data, source_stride = bytes(source), source.line_size
            x0, y0 = (k % grid.columns) * tile_w, (k // grid.columns) * tile_h
            for row in range(tile_h):
                at = (y0 + row) * stride + x0
                buffer[at : at + tile_w] = data[row * source_stride : row * source_stride + tile_w]
        plane.update(bytes(buffer))
    return sprite


def even_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    if width <= max_width:
        return width - width % 2, height - height % 2
    scaled = round(height * max_width / width)
    return max_width - max_width % 2, max(2, scaled - scaled % 2)
