"""One rendition's CMAF parts, written and announced as a transcode worker does: each part is
stored first, then its PartReady goes to `onair.parts` on the real broker, where every origin
learns of it. For tests and benches that need an LL-HLS stream on an origin without running
the encoders (bench.origin, the HTTP/2 e2e test). The bytes are random, of a 3 Mb/s part's
size: what they exercise is the origin, not the media."""

from __future__ import annotations

import os
import time
from typing import Any

from pipeline import keys
from pipeline.store import ObjectStore
from schemas.codec import Codec
from topics.client import CheckedProducer
from topics.specs import PARTS

PART_90K = 18_000  # 0.2 s
PARTS_PER_SEGMENT = 10  # 2 s segments
PART_BYTES = 75_000  # 0.2 s at 3 Mb/s
IMMUTABLE = "public, max-age=31536000, immutable"


class PartFeed:
    def __init__(
        self,
        store: ObjectStore,
        bootstrap: str,
        channel: str,
        stream_id: str,
        rendition: str = "720p30",
    ) -> None:
        self.store, self.channel, self.stream_id = store, channel, stream_id
        self.rendition = rendition
        self.producer = CheckedProducer(bootstrap)
        self.codec = Codec()
        self.started_ms = int(time.time() * 1000)
        self.init_key = keys.cmaf_key(stream_id, rendition, "init-0123456789abcdef.mp4")
        store.put(self.init_key, os.urandom(800), content_type="video/mp4",
                  cache_control=IMMUTABLE)  # fmt: skip

    def key(self, sequence: int, part: int | None = None) -> str:
        return keys.cmaf_key(self.stream_id, self.rendition, keys.cmaf_segment_name(sequence, part))

    def url(self, sequence: int, part: int | None = None) -> str:
        """The part's path on the origin, as the LL playlist lists it."""
        name = keys.cmaf_segment_name(sequence, part)
        return f"/live/{self.channel}/{self.rendition}/{self.stream_id}/{name}"

    def store_part(self, sequence: int, part: int) -> dict[str, Any]:
        """Store part `part` of segment `sequence` (and, with the last part, the whole
        segment): its PartReady, not produced yet."""
        self.store.put(self.key(sequence, part), os.urandom(PART_BYTES),
                       content_type="video/iso.segment", cache_control=IMMUTABLE)  # fmt: skip
        last = part == PARTS_PER_SEGMENT - 1
        if last:
            self.store.put(self.key(sequence), os.urandom(PARTS_PER_SEGMENT * PART_BYTES),
                           content_type="video/iso.segment", cache_control=IMMUTABLE)  # fmt: skip
        start = (sequence * PARTS_PER_SEGMENT + part) * PART_90K
        return {
            "stream_id": self.stream_id, "channel": self.channel, "rendition": self.rendition,
            "renditions": [self.rendition], "sequence": sequence, "part": part,
            "key": self.key(sequence, part), "init_key": self.init_key,
            "start_pts_90k": start, "duration_90k": PART_90K, "independent": part == 0,
            "discontinuity": False, "program_date_time_ms": self.started_ms + 2000 * sequence,
            "ingest_time_ms": self.started_ms, "last": last,
            "segment_key": self.key(sequence) if last else "",
            "segment_duration_90k": PARTS_PER_SEGMENT * PART_90K if last else 0,
            "bitrate_bps": 3_000_000 if last else 0, "width": 1280, "height": 720, "fps": 30.0,
            "codecs": "avc1.64001f,mp4a.40.2", "end_of_stream": False,
        }  # fmt: skip

    def announce(self, record: dict[str, Any]) -> None:
        """Queue its PartReady (`flush` sends)."""
        self.producer.produce(PARTS, self.stream_id, self.codec.encode("PartReady", record))

    def flush(self) -> None:
        self.producer.flush()

    def publish(self, sequence: int, part: int) -> None:
        """Store one part and announce it, acknowledged by the broker."""
        self.announce(self.store_part(sequence, part))
        self.flush()

    def publish_upto(self, last: tuple[int, int]) -> None:
        """Every part from (0, 0) to `last`, announced in one flush."""
        for sequence in range(last[0] + 1):
            for part in range(PARTS_PER_SEGMENT):
                if (sequence, part) <= last:
                    self.announce(self.store_part(sequence, part))
        self.flush()
