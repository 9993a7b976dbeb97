"""The transcode core's handling of GOPs that arrive in parts (no broker needed: `process`),
and the worker's commit rule around them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from objectstore.local import LocalStore
from pipeline.gop import Gop
from pipeline.ladder import DEFAULT_LADDER, Ladder
from schemas.records import gop_to_record
from tests.mediafixtures import cached_flv, gops_from_flv
from workers.transcode.core import RungTranscoder
from workers.transcode.worker import TranscodeWorker

LADDER = Ladder.parse(DEFAULT_LADDER)


@pytest.fixture(scope="module")
def gops(tmp_path_factory: pytest.TempPathFactory) -> list[Gop]:
    media = tmp_path_factory.mktemp("parts")
    return gops_from_flv(cached_flv(media, 4.0, size="640x360"), "parts")


def _parts(gop: Gop, size: int) -> list[dict[str, Any]]:
    chunks = [gop.units[i : i + size] for i in range(0, len(gop.units), size)]
    return [
        gop_to_record(
            replace(gop, units=units, duration_90k=gop.duration_90k if last else 0),
            channel="c",
            ingest_time_ms=1,
            part_index=index,
            last_part=last,
        )
        for index, units in enumerate(chunks)
        for last in [index == len(chunks) - 1]
    ]


def _transcoder(tmp_path: Path, name: str) -> RungTranscoder:
    return RungTranscoder(LADDER.get("360p30"), LADDER, LocalStore(tmp_path / name))


def _worker(tmp_path: Path, name: str) -> TranscodeWorker:
    return TranscodeWorker("unused:9092", LADDER.get("360p30"), LADDER, LocalStore(tmp_path / name))


def test_parts_give_the_segment_the_whole_gop_gives(gops: list[Gop], tmp_path: Path) -> None:
    whole = _transcoder(tmp_path, "whole").process(
        gop_to_record(gops[0], channel="c", ingest_time_ms=1)
    )
    transcoder = _transcoder(tmp_path, "parts")
    parts = _parts(gops[0], 40)
    events = [transcoder.process(part, position=(0, n)) for n, part in enumerate(parts)]
    assert events[:-1] == [None] * (len(events) - 1)
    assert events[-1] == whole
    segment = f"streams/parts/360p30/{0:06d}.ts"
    assert (tmp_path / "parts" / segment).read_bytes() == (
        tmp_path / "whole" / segment
    ).read_bytes()


class RecordingConsumer:
    """Records what the worker commits (the commit rule is pure logic)."""

    def __init__(self) -> None:
        self.commits: list[tuple[int, int]] = []

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        assert not asynchronous
        self.commits += [(tp.partition, tp.offset) for tp in offsets]


class At:
    """Where a message was read: the three things the commit rule asks of it."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "onair.ingest.gops"


def test_an_open_gop_holds_back_the_commit_of_its_partition(
    gops: list[Gop], tmp_path: Path
) -> None:
    worker = _worker(tmp_path, "w")
    consumer = RecordingConsumer()
    first, second, *rest = _parts(gops[0], 40)
    worker.core.process(first, position=(3, 100))
    worker._commit(consumer, At(3, 100))  # type: ignore[arg-type]
    worker.core.process(second, position=(3, 101))
    worker._commit(consumer, At(3, 101))  # type: ignore[arg-type]
    # another partition is not held back
    worker._commit(consumer, At(4, 7))  # type: ignore[arg-type]
    assert consumer.commits == [(3, 100), (4, 8)]  # the GOP's first part is read again
    for offset, part in enumerate(rest, start=102):
        worker.core.process(part, position=(3, offset))
    worker._commit(consumer, At(3, 101 + len(rest)))  # type: ignore[arg-type]
    assert consumer.commits[-1] == (3, 102 + len(rest))
    assert not worker.core.open_streams()


def test_parts_whose_first_part_this_worker_never_saw_are_left_alone(
    gops: list[Gop], tmp_path: Path
) -> None:
    """After a restart mid-GOP the committed offset points at the GOP's first part, so the
    only such parts belong to GOPs a predecessor already finished."""
    transcoder = _transcoder(tmp_path, "w")
    _first, *rest = _parts(gops[1], 40)
    assert [transcoder.process(part) for part in rest] == [None] * len(rest)
    assert not transcoder.open_streams()
    assert not (tmp_path / "w" / "streams").exists()


def test_two_streams_in_parts_at_once_do_not_share_a_decoder(
    gops: list[Gop], tmp_path: Path
) -> None:
    """Two streams with the same codec config (two encoders with the same settings) arrive
    interleaved on one partition: each segment is the one its GOP alone gives."""
    a = replace(gops[0], stream_id="a")
    b = replace(gops[1], stream_id="b")
    alone = _transcoder(tmp_path, "alone")
    expected = [alone.process(gop_to_record(g, channel="c", ingest_time_ms=1)) for g in (a, b)]
    transcoder = _transcoder(tmp_path, "mixed")
    events = []
    for n, (part_a, part_b) in enumerate(zip(_parts(a, 30), _parts(b, 30), strict=False)):
        events.append(transcoder.process(part_a, position=(0, 2 * n)))
        events.append(transcoder.process(part_b, position=(0, 2 * n + 1)))
    got = [e for e in events if e is not None]
    assert sorted(got, key=lambda e: e["stream_id"]) == expected
