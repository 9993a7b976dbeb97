"""Chat history read back from Kafka: a channel's messages between two times.

The chat topic is keyed by channel, so a channel's messages are in one partition, mixed with
other channels'. `offsets_for_times` finds where `since` starts (the broker indexes its
LogAppendTime; a message's `ts` is the accepting chat server's clock, so the search starts
`SKEW_MS` early and every record is filtered on `ts`), then records are read forward, keys
compared before anything is decoded. Without `since`, windows of offsets are read backwards
from `until` until `limit` messages are found. Every request reads at most `max_scan`
records, each window through a `topics.reader.Reader` bounded at the window's end; readers
are reused across requests. A consumer error, or a broker that does not answer, raises
`KafkaException` (the route answers 503).

Moderation is applied here, on the server, so no client ever receives what it should not
show: the caller's `hidden(record)` (`ModerationState.hides`: deleted by a moderator, or
cleared by a later ban or timeout of its sender) leaves a record out, and `limit` counts only
what is left.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException

from gateway.chat.frames import message_json
from pipeline.errors import CodecError
from schemas.codec import Codec
from topics.reader import Reader, Start, Track
from topics.specs import CHAT

logger = logging.getLogger(__name__)

MAX_OFFSET = 2**63 - 1
SKEW_MS = 5_000  # sent_ms (chat server clock) vs the broker's LogAppendTime


@dataclass(slots=True)
class HistoryPage:
    channel: str
    messages: list[dict[str, Any]]
    more: bool

    def to_json(self) -> dict[str, Any]:
        next_since = self.messages[-1]["ts"] if self.more and self.messages else None
        return {
            "channel": self.channel,
            "messages": self.messages,
            "more": self.more,
            "next_since": next_since,
        }


class HistoryReader:
    """Reads a channel's messages back from its partition; blocking (run it in a thread).
    A few readers are reused across requests (creating one costs a broker round trip)."""

    def __init__(self, bootstrap: str, codec: Codec, max_scan: int) -> None:
        self.bootstrap = bootstrap
        self.codec = codec
        self.max_scan = max_scan
        self._idle: queue.SimpleQueue[Reader] = queue.SimpleQueue()
        self._all: list[Reader] = []

    def _take(self) -> Reader:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            config: dict[str, Any] = {"queued.min.messages": 1000}
            reader = Reader(self.bootstrap, CHAT, config=config)
            self._all.append(reader)
            return reader

    def close(self) -> None:
        for reader in self._all:
            reader.close()
        self._all.clear()

    def read(
        self,
        channel: str,
        partition: int,
        since_ms: int | None,
        until_ms: int,
        limit: int,
        hidden: Callable[[dict[str, Any]], bool],
    ) -> HistoryPage:
        """`hidden(record)`: True leaves a decoded `ChatMessage` record out."""
        reader = self._take()
        try:
            page = self._read(reader, channel, partition, since_ms, until_ms, limit, hidden)
        except Exception as exc:
            # a reader that failed mid-read may still hold its partition: not reused
            with contextlib.suppress(ValueError):
                self._all.remove(reader)
            with contextlib.suppress(KafkaException, RuntimeError):
                reader.close()
            if isinstance(exc, TimeoutError):  # no watermarks in time: the broker is away
                raise KafkaException(str(exc)) from exc
            raise
        self._idle.put(reader)
        return page

    def _read(
        self,
        reader: Reader,
        channel: str,
        partition: int,
        since_ms: int | None,
        until_ms: int,
        limit: int,
        hidden: Callable[[dict[str, Any]], bool],
    ) -> HistoryPage:
        key = channel.encode()

        def matches(record: dict[str, Any]) -> bool:
            sent = int(record["sent_ms"])
            return (
                record["channel"] == channel
                and (since_ms is None or sent >= since_ms)
                and sent <= until_ms
                and not hidden(record)
            )

        if since_ms is not None:  # oldest first from `since`
            at = self._locate(reader, partition, since_ms - SKEW_MS)
            found, _ = self._scan(reader, partition, at.next, at.end, key, matches, until_ms, limit)
            return HistoryPage(channel, found[:limit], len(found) > limit)
        # newest `limit` up to `until`: read windows backwards from there
        at = self._locate(reader, partition, until_ms + SKEW_MS)
        low, end = at.low, at.next
        found = []
        window = max(4 * limit, 512)
        scanned = 0
        while end > low and len(found) <= limit and scanned < self.max_scan:
            start = max(low, end - window)
            chunk, _ = self._scan(reader, partition, start, end, key, matches, None, None)
            found = chunk + found
            scanned += end - start
            end = start
            window *= 2
        return HistoryPage(channel, found[-limit:], len(found) > limit)

    @staticmethod
    def _locate(reader: Reader, partition: int, ts_ms: int) -> Track:
        """`next`: the first offset at or after `ts_ms` (the end when none is); `end`, `low`:
        the partition's watermarks."""
        at_ms = min(max(0, ts_ms), MAX_OFFSET)  # Kafka takes an int64
        return reader.locate([partition], Start.at_time(at_ms))[partition]

    def _scan(
        self,
        reader: Reader,
        partition: int,
        start: int,
        end: int,
        key: bytes,
        matches: Callable[[dict[str, Any]], bool],
        until_ms: int | None,
        limit: int | None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Records in [start, end) of the partition that match, up to limit + 1."""
        found: list[dict[str, Any]] = []
        if start >= end:
            return found, 0
        reader.assign({partition: Track(start, end, stop=end)})
        scanned = 0
        try:
            while scanned < self.max_scan and not reader.finished:
                batch = reader.poll(2.0)
                if batch is None:
                    break  # nothing within 2 s: the broker is away or the range is empty
                for msg in batch.messages:
                    scanned += 1
                    _kind, broker_ms = msg.timestamp()
                    if until_ms is not None and broker_ms > until_ms + SKEW_MS:
                        return found, scanned
                    if msg.key() == key:
                        try:
                            record = self.codec.expect("ChatMessage", msg.value())
                        except CodecError:
                            record = None
                        if record is not None and matches(record):
                            found.append(message_json(record))
                            if limit is not None and len(found) > limit:
                                return found, scanned
                    if scanned >= self.max_scan:
                        break
        finally:
            reader.release([partition])
        return found, scanned
