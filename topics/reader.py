"""Reading partitions of a topic by assign(): positions, end of partition and errors, once.

    Start     where a partition is first read: BEGINNING, END, Start.offset(n), Start.at_time(ms)
    Track     a partition located: next offset, its end (high watermark) then, a stop, its low
    Cursor    pure bookkeeping over polled messages: drops what is not wanted (released
              partitions, offsets already handed, past a stop), turns end-of-partition events
              into positions and `at_end`, raises on every other error event
    Reader    one group-less consumer with a Cursor: `locate()` resolves Starts (watermarks,
              offsets_for_times), `assign()`/`release()` while reading, `poll()` → a `Batch`
    read()    a bounded read: every record up to the end each partition had when reading
              began (or `stop_at`), then it returns (history, restores, replays)

`topics.follower.Follower` drives the same Reader from a thread, with restarts. Nothing here
commits offsets: positions live in memory, and side effects are the caller's business.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from topics.client import make_consumer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Start:
    """Where a partition is first read from (resolved to an offset once, when assigned)."""

    kind: Literal["beginning", "end", "offset", "time"]
    value: int = 0

    @classmethod
    def offset(cls, offset: int) -> Start:
        return cls("offset", offset)

    @classmethod
    def at_time(cls, ms: int) -> Start:
        """The first record whose timestamp is at or after `ms` (the end if none is)."""
        return cls("time", ms)


BEGINNING = Start("beginning")
END = Start("end")


@dataclass(frozen=True, slots=True)
class Track:
    """A partition resolved: `next` offset to read, `end` (its high watermark when it was
    located: "caught up" once read past), `stop` (bounded: nothing at or past it is
    handed), `low` (its low watermark then)."""

    next: int
    end: int
    stop: int | None = None
    low: int = 0


@dataclass(slots=True)
class Batch:
    """Records in poll order (per partition in offset order) and, per partition that moved,
    the next offset once they are handled (end-of-partition events move it too)."""

    messages: list[Message]
    positions: dict[int, int]


class Cursor:
    """Positions of the assigned partitions; sifts polled messages into a `Batch`. Pure."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}
        self.stop: dict[int, int] = {}
        self.at_end: set[int] = set()  # an end-of-partition event came after the last record

    def add(self, partition: int, track: Track) -> None:
        self.next[partition] = track.next
        self.at_end.discard(partition)
        if track.stop is not None:
            self.stop[partition] = track.stop

    def remove(self, partition: int) -> None:
        self.next.pop(partition, None)
        self.stop.pop(partition, None)
        self.at_end.discard(partition)

    def done(self, partition: int) -> bool:
        stop = self.stop.get(partition)
        return stop is not None and self.next.get(partition, stop) >= stop

    def sift(self, raw: Iterable[Message]) -> Batch:
        """Raises `KafkaException` on an error event other than end of partition."""
        batch = Batch([], {})
        for msg in raw:
            partition, offset = msg.partition() or 0, msg.offset()
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(err)
            position = self.next.get(partition)
            if position is None or offset is None:
                continue  # released meanwhile, or an event of no partition
            if err is not None:  # end of partition: `offset` is the end it reached
                self.at_end.add(partition)
                moved = max(position, offset)
            elif offset < position:
                continue  # handed already
            elif partition in self.stop and offset >= self.stop[partition]:
                moved = max(position, self.stop[partition])
            else:
                batch.messages.append(msg)
                self.at_end.discard(partition)
                moved = offset + 1
            if partition in self.stop:
                moved = min(moved, max(position, self.stop[partition]))
            if moved != position:
                self.next[partition] = batch.positions[partition] = moved
        return batch


class Reader:
    """One group-less consumer over `topic` (always with end-of-partition events)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        config: Mapping[str, Any] | None = None,
        max_batch: int = 500,
    ) -> None:
        self.topic = topic
        self.max_batch = max(1, max_batch)
        settings: dict[str, Any] = {**(config or {}), "enable.partition.eof": True}
        self._consumer = make_consumer(bootstrap, None, **settings)
        self.cursor = Cursor()

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def partitions(self, timeout_s: float = 10.0) -> list[int]:
        """Every partition of the topic; raises if it has none (e.g. not created yet)."""
        described = self._consumer.list_topics(self.topic, timeout=timeout_s).topics.get(self.topic)
        if described is None or described.error is not None or not described.partitions:
            error = described.error if described is not None else "unknown"
            raise KafkaException(f"topic {self.topic} has no partitions ({error})")
        return sorted(described.partitions)

    def watermarks(self, partition: int, timeout_s: float = 10.0) -> tuple[int, int]:
        found = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=timeout_s, cached=False
        )
        if found is None:
            raise TimeoutError(f"{self.topic}[{partition}]: no watermarks in {timeout_s} s")
        return int(found[0]), int(found[1])

    def locate(
        self,
        partitions: Iterable[int],
        start: Start | Mapping[int, Start] = BEGINNING,
        *,
        bounded: bool = False,
        stop_at: Mapping[int, int] | None = None,
        timeout_s: float = 10.0,
    ) -> dict[int, Track]:
        """Resolve where each partition starts and ends now. `bounded`: stop at that end, or
        at `stop_at[p]` (exclusive) when lower."""
        starts = {p: start[p] if isinstance(start, Mapping) else start for p in set(partitions)}
        timed = [
            TopicPartition(self.topic, p, max(0, s.value))
            for p, s in sorted(starts.items())
            if s.kind == "time"
        ]
        found: dict[int, int] = {}
        if timed:
            for tp in self._consumer.offsets_for_times(timed, timeout=timeout_s):
                if tp.error is not None:
                    raise KafkaException(tp.error)
                found[tp.partition] = tp.offset
        tracks: dict[int, Track] = {}
        for partition, where in sorted(starts.items()):
            low, high = self.watermarks(partition, timeout_s)
            if where.kind == "beginning":
                first = low
            elif where.kind == "end":
                first = high
            elif where.kind == "offset":
                first = where.value
            else:
                at = found.get(partition, -1)
                first = high if at < 0 else max(at, low)
            stop = min(high, (stop_at or {}).get(partition, high)) if bounded else None
            tracks[partition] = Track(first, high, stop, low)
        return tracks

    def assign(self, tracks: Mapping[int, Track]) -> None:
        """Start reading these partitions (added to what is read already)."""
        fresh = {p: t for p, t in tracks.items() if p not in self.cursor.next}
        for partition, track in fresh.items():
            self.cursor.add(partition, track)
        todo = [p for p in sorted(fresh) if not self.cursor.done(p)]
        if todo:
            self._consumer.incremental_assign(
                [TopicPartition(self.topic, p, self.cursor.next[p]) for p in todo]
            )

    def release(self, partitions: Iterable[int]) -> None:
        """Stop reading these partitions and forget their positions."""
        held = [p for p in sorted(set(partitions)) if p in self.cursor.next]
        for partition in held:
            if not self.cursor.done(partition):
                self._consumer.incremental_unassign([TopicPartition(self.topic, partition)])
            self.cursor.remove(partition)

    @property
    def assigned(self) -> set[int]:
        return set(self.cursor.next)

    @property
    def finished(self) -> bool:
        """Every assigned partition is bounded and reached its stop."""
        return all(self.cursor.done(p) for p in self.cursor.next)

    @property
    def idle(self) -> bool:
        """Every assigned partition is at its end (or done): nothing waits to be read."""
        cursor = self.cursor
        return all(p in cursor.at_end or cursor.done(p) for p in cursor.next)

    def poll(self, timeout_s: float) -> Batch | None:
        """Up to `max_batch` messages; None when nothing came within `timeout_s`."""
        first = self._consumer.poll(timeout_s)
        if first is None:
            return None
        raw = [first]
        if self.max_batch > 1:
            raw.extend(self._consumer.consume(num_messages=self.max_batch - 1, timeout=0))
        bounded = {p for p in self.cursor.stop if not self.cursor.done(p)}
        batch = self.cursor.sift(raw)
        finished = [p for p in sorted(bounded) if self.cursor.done(p)]
        if finished:
            self._consumer.incremental_unassign([TopicPartition(self.topic, p) for p in finished])
        return batch


def read(
    bootstrap: str,
    topic: str,
    *,
    partitions: Iterable[int] | None = None,
    start: Start | Mapping[int, Start] = BEGINNING,
    stop_at: Mapping[int, int] | None = None,
    idle_timeout_s: float = 60.0,
    config: Mapping[str, Any] | None = None,
    max_batch: int = 500,
) -> Generator[Message, None, None]:
    """Every record of `partitions` (None → all) from `start` up to the end each had when
    reading began (or `stop_at[p]`, exclusive, when lower), then return. Raises
    `TimeoutError` when nothing arrives for `idle_timeout_s` of polling before that (the time
    the caller spends between records does not count), `KafkaException` on a consumer error.
    The consumer is closed when the generator ends or is closed."""
    with Reader(bootstrap, topic, config=config, max_batch=max_batch) as reader:
        chosen = reader.partitions() if partitions is None else list(partitions)
        reader.assign(reader.locate(chosen, start, bounded=True, stop_at=stop_at))
        heard = time.monotonic()
        while not reader.finished:
            batch = reader.poll(0.2)
            if batch is not None:
                yield from batch.messages
                heard = time.monotonic()  # idle: from when the caller asks for more
            elif time.monotonic() - heard > idle_timeout_s:
                behind = sorted(p for p in reader.assigned if not reader.cursor.done(p))
                raise TimeoutError(
                    f"{topic} partitions {behind}: nothing read for {idle_timeout_s:.0f} s"
                )
