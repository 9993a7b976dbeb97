"""Where a stream taken over from another ingest goes on: its last GOP chunk in Kafka.

An ingest that resumes or ends a stream it did not hold reads the stream's partition of
`onair.ingest.gops` from the last chunk its lease said was acknowledged (or from its first
chunk) to the partition's end: a bounded read (`topics.reader.read`) of a few seconds of media.
It runs only after the taker's claim won, when the old holder can no longer add a chunk (it
stopped producing before its lease expired, and its producer gives up on a chunk within the
margin), so the log is the whole truth: the next sequence number is the one after the last
complete GOP (a GOP whose last part never came is dropped downstream by what follows it), and
the last chunk carries the codec config an end marker repeats.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gateway.ingest.lease import Progress
from pipeline.errors import CodecError
from pipeline.media import CodecConfig
from schemas.codec import Codec
from topics.reader import Start, read
from topics.specs import GOPS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamTail:
    next_sequence: int
    config: CodecConfig | None
    last_offset: int  # of the stream's last chunk; -1 when none was found


def read_tail(
    bootstrap: str,
    stream_id: str,
    progress: Progress,
    *,
    codec: Codec | None = None,
    topic: str = GOPS,
    idle_timeout_s: float = 30.0,
) -> StreamTail:
    """Blocking (run it in a thread). Without a known partition and offset (the stream never
    had a chunk acknowledged), the lease's own count is all there is."""
    partition = progress.gops_partition
    start = max(progress.gops_last_offset, progress.gops_first_offset)
    if partition < 0 or start < 0:
        return StreamTail(progress.next_sequence, None, -1)
    codec = codec or Codec()
    key = stream_id.encode()
    last: dict[str, Any] | None = None
    last_offset = -1
    for msg in read(
        bootstrap,
        topic,
        partitions=[partition],
        start=Start.offset(start),
        idle_timeout_s=idle_timeout_s,
    ):
        if msg.key() != key:
            continue
        try:
            record = codec.expect("GopChunk", msg.value())
        except CodecError as exc:
            logger.warning("stream %s: skipped a chunk at %s: %s", stream_id, msg.offset(), exc)
            continue
        if record["stream_id"] == stream_id:
            last, last_offset = record, msg.offset() or 0
    if last is None:
        logger.warning(
            "stream %s: no chunk at or after %s[%d]@%d", stream_id, topic, partition, start
        )
        return StreamTail(progress.next_sequence, None, progress.gops_last_offset)
    return StreamTail(_next_sequence(last), _config(last), last_offset)


def _next_sequence(chunk: dict[str, Any]) -> int:
    sequence: int = chunk["sequence"]
    if chunk["end_of_stream"] or not chunk["last_part"]:
        return sequence
    return sequence + 1


def _config(chunk: dict[str, Any]) -> CodecConfig | None:
    if not chunk["height"]:
        return None
    return CodecConfig(
        avc_config=chunk["video_config"],
        aac_config=chunk["audio_config"],
        width=chunk["width"],
        height=chunk["height"],
        fps=chunk["fps"],
        audio_sample_rate=chunk["audio_sample_rate"],
        audio_channels=chunk["audio_channels"],
    )
