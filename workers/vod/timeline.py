"""A stream's segments as the VOD sees them: `SegmentSet` (every SegmentReady, once each) and
`Timeline` (aligned across renditions, the runs between discontinuities, media time and the
wall clock → media time mapping that places chapters)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pipeline.errors import MediaError
from pipeline.keys import cmaf_segment_name, segment_name
from pipeline.playlist import SegmentEntry
from pipeline.timebase import CLOCK_90K

JUMP_TOLERANCE_90K = 9_000  # as the live window: a bigger gap between segments is a cut
MS_90K = CLOCK_90K // 1000  # 90 kHz ticks in a millisecond


@dataclass
class SegmentSet:
    """Every SegmentReady of one stream, one per (rendition, sequence): a segment re-produced
    after a worker restart shows up twice and is kept once."""

    stream_id: str
    segments: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    ends: dict[str, int] = field(default_factory=dict)  # rendition → end marker's sequence
    announced: set[str] = field(default_factory=set)  # the records' `renditions`
    duplicates: int = 0
    foreign: bool = False  # its segments are not in our store

    def add(self, record: Mapping[str, Any]) -> None:
        rendition = record["rendition"]
        self.announced.update(record.get("renditions") or ())
        if record["end_of_stream"]:
            self.ends[rendition] = record["sequence"]
            return
        by_sequence = self.segments.setdefault(rendition, {})
        if record["sequence"] in by_sequence:
            self.duplicates += 1
            return
        by_sequence[record["sequence"]] = dict(record)

    def complete(self, expected: Iterable[str]) -> bool:
        wanted = set(expected) or self.announced
        return bool(wanted) and wanted <= self.ends.keys()


@dataclass(frozen=True)
class Timeline:
    """The segments every included rendition has, in order, and where the media breaks.

    Index i is the i-th segment of the VOD in every rendition (sequence `sequences[i]`).
    `breaks` holds the indexes that open a new run: the segment carries `discontinuity`
    (a reconnect), a sequence is missing before it (a GOP no worker could transcode), or its
    timestamps do not continue the previous segment's. Durations come from the first
    (highest) rendition; the others differ by less than a frame.
    """

    renditions: tuple[str, ...]
    sequences: tuple[int, ...]
    records: Mapping[str, Mapping[int, Mapping[str, Any]]]
    breaks: frozenset[int]
    offsets_90k: tuple[int, ...]
    total_90k: int
    dropped: int = 0  # segments left out because not every rendition had them

    @classmethod
    def build(
        cls,
        segments: SegmentSet,
        renditions: Sequence[str],
        jump_tolerance_90k: int = JUMP_TOLERANCE_90K,
    ) -> Timeline:
        present = [r for r in renditions if segments.segments.get(r)]
        if not present:
            raise MediaError(f"stream {segments.stream_id}: no segment in any rendition")
        heights = {r: next(iter(segments.segments[r].values()))["height"] for r in present}
        ordered = tuple(sorted(present, key=lambda r: (-heights[r], r)))
        common = set.intersection(*(set(segments.segments[r]) for r in ordered))
        if not common:
            raise MediaError(f"stream {segments.stream_id}: the renditions share no segment")
        sequences = tuple(sorted(common))
        dropped = sum(len(segments.segments[r]) - len(common) for r in ordered)
        reference = segments.segments[ordered[0]]
        breaks: set[int] = set()
        offsets: list[int] = []
        total = 0
        for index, sequence in enumerate(sequences):
            offsets.append(total)
            record = reference[sequence]
            total += record["duration_90k"]
            if index == 0:
                continue
            before = reference[sequences[index - 1]]
            expected_pts = before["start_pts_90k"] + before["duration_90k"]
            if (
                sequence != sequences[index - 1] + 1
                or any(segments.segments[r][sequence]["discontinuity"] for r in ordered)
                or abs(record["start_pts_90k"] - expected_pts) > jump_tolerance_90k
            ):
                breaks.add(index)
        records = {r: segments.segments[r] for r in ordered}
        return cls(ordered, sequences, records, frozenset(breaks), tuple(offsets), total, dropped)

    @property
    def total_ms(self) -> int:
        return self.total_90k // MS_90K

    def record(self, index: int, rendition: str | None = None) -> Mapping[str, Any]:
        return self.records[rendition or self.renditions[0]][self.sequences[index]]

    @cached_property
    def cmaf(self) -> bool:
        """Every segment of every included rendition was also written as CMAF (the live
        workers cut parts for low-latency HLS): the VOD then reads and lists the CMAF
        segments. A stream with any segment written as MPEG-TS only stays on MPEG-TS."""
        return all(
            self.records[rendition][sequence].get("cmaf_key")
            and self.records[rendition][sequence].get("init_key")
            for rendition in self.renditions
            for sequence in self.sequences
        )

    def segment_key(self, index: int, rendition: str) -> str:
        """The object the VOD reads for segment `index` of `rendition`."""
        record = self.record(index, rendition)
        return str(record["cmaf_key"] if self.cmaf else record["key"])

    def runs(self, rendition: str | None = None) -> list[range]:
        """Index ranges between breaks: within a run, timestamps continue. With `rendition`
        and CMAF, a run also ends where that rendition's init segment changes (one MP4
        stream is one init)."""
        cuts = set(self.breaks)
        if rendition is not None and self.cmaf:
            inits = [self.record(i, rendition)["init_key"] for i in range(len(self.sequences))]
            cuts |= {i for i in range(1, len(inits)) if inits[i] != inits[i - 1]}
        starts = [0, *sorted(cuts), len(self.sequences)]
        return [range(a, b) for a, b in itertools.pairwise(starts) if b > a]

    def entries(self, rendition: str) -> list[SegmentEntry]:
        """The rendition's playlist entries; PROGRAM-DATE-TIME where a run starts."""
        entries = []
        cmaf = self.cmaf
        for index, sequence in enumerate(self.sequences):
            record = self.records[rendition][sequence]
            opens_run = index == 0 or index in self.breaks
            entries.append(
                SegmentEntry(
                    sequence=sequence,
                    duration_90k=record["duration_90k"],
                    uri=cmaf_segment_name(sequence) if cmaf else segment_name(sequence),
                    init_uri=str(record["init_key"]).rsplit("/", 1)[-1] if cmaf else "",
                    discontinuity=index in self.breaks,
                    program_date_time_ms=self.record(index)["program_date_time_ms"]
                    if opens_run
                    else 0,
                    size_bytes=record["size_bytes"],
                    start_pts_90k=record["start_pts_90k"],
                )
            )
        return entries

    def index_at(self, offset_90k: int) -> int:
        """The segment playing at a media offset."""
        low, high = 0, len(self.offsets_90k) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self.offsets_90k[middle] <= offset_90k:
                low = middle
            else:
                high = middle - 1
        return low

    def offset_of_wall(self, wall_ms: int) -> int:
        """Where wall-clock time `wall_ms` falls in the VOD (90 kHz), through the segments'
        program date-times; a moment between two runs (the streamer was away) maps to the
        start of the next one."""
        for index in range(len(self.sequences)):
            record = self.record(index)
            start_ms = int(record["program_date_time_ms"])
            duration_ms = int(record["duration_90k"]) // MS_90K
            if wall_ms < start_ms:
                return self.offsets_90k[index]
            if wall_ms < start_ms + duration_ms:
                return self.offsets_90k[index] + (wall_ms - start_ms) * MS_90K
        return self.total_90k

    def wall_at(self, offset_90k: int) -> int:
        """The playlist's date-time at a media offset: its run's PROGRAM-DATE-TIME plus the
        media time since (what a player computes)."""
        index = self.index_at(offset_90k)
        start = max(i for i in [0, *self.breaks] if i <= index)
        run_start_ms = int(self.record(start)["program_date_time_ms"])
        return run_start_ms + (offset_90k - self.offsets_90k[start]) // MS_90K
