"""Chat history read back from Kafka: a channel's messages between two times.

The chat topic is keyed by channel, so a channel's messages are in one partition, mixed with
other channels'. `offsets_for_times` finds where `since` starts (the broker indexes its
LogAppendTime; a message's `ts` is the accepting chat server's clock, so the search starts
`SKEW_MS` early and every record is filtered on `ts`), then records are read forward, keys
compared before anything is decoded. Without `since`, windows of offsets are read backwards
from `until` until `limit` messages are found. Every request reads at most `max_scan`
records; consumers are reused across requests.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from gateway.chat.frames import message_json
from pipeline.errors import CodecError
from schemas.codec import Codec
from topics.client import make_consumer
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
    A few consumers are reused across requests (creating one costs a broker round trip)."""

    def __init__(self, bootstrap: str, codec: Codec, max_scan: int) -> None:
        self.bootstrap = bootstrap
        self.codec = codec
        self.max_scan = max_scan
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._all: list[Any] = []

    def _take(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            config: dict[str, Any] = {"queued.min.messages": 1000}
            consumer = make_consumer(self.bootstrap, None, **config)
            self._all.append(consumer)
            return consumer

    def close(self) -> None:
        for consumer in self._all:
            consumer.close()
        self._all.clear()

    def read(
        self,
        channel: str,
        partition: int,
        since_ms: int | None,
        until_ms: int,
        limit: int,
        is_deleted: Callable[[str], bool],
    ) -> HistoryPage:
        consumer = self._take()
        try:
            return self._read(consumer, channel, partition, since_ms, until_ms, limit, is_deleted)
        finally:
            with contextlib.suppress(KafkaException):
                consumer.unassign()
            self._idle.put(consumer)

    def _read(
        self,
        consumer: Any,
        channel: str,
        partition: int,
        since_ms: int | None,
        until_ms: int,
        limit: int,
        is_deleted: Callable[[str], bool],
    ) -> HistoryPage:
        tp = TopicPartition(CHAT, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
        key = channel.encode()

        def matches(record: dict[str, Any]) -> bool:
            sent = int(record["sent_ms"])
            return (
                record["channel"] == channel
                and (since_ms is None or sent >= since_ms)
                and sent <= until_ms
                and not is_deleted(str(record["id"]))
            )

        if since_ms is not None:  # oldest first from `since`
            start = self._offset_at(consumer, partition, since_ms - SKEW_MS, high)
            found, _ = self._scan(consumer, partition, start, high, key, matches, until_ms, limit)
            return HistoryPage(channel, found[:limit], len(found) > limit)
        # newest `limit` up to `until`: read windows backwards from there
        end = self._offset_at(consumer, partition, until_ms + SKEW_MS, high)
        found = []
        window = max(4 * limit, 512)
        scanned = 0
        while end > low and len(found) <= limit and scanned < self.max_scan:
            start = max(low, end - window)
            chunk, _ = self._scan(consumer, partition, start, end, key, matches, None, None)
            found = chunk + found
            scanned += end - start
            end = start
            window *= 2
        return HistoryPage(channel, found[-limit:], len(found) > limit)

    @staticmethod
    def _offset_at(consumer: Any, partition: int, ts_ms: int, default: int) -> int:
        tp = TopicPartition(CHAT, partition, min(max(0, ts_ms), MAX_OFFSET))  # an int64
        [found] = consumer.offsets_for_times([tp], timeout=10.0)
        return int(found.offset) if found.offset >= 0 else default

    def _scan(
        self,
        consumer: Any,
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
        consumer.assign([TopicPartition(CHAT, partition, start)])
        scanned = 0
        try:
            while scanned < self.max_scan:
                msg = consumer.poll(2.0)
                if msg is None:
                    break  # nothing within 2 s: the broker is away or the range is empty
                if msg.error() is not None:
                    continue
                offset = msg.offset() or 0
                if offset >= end:
                    break
                scanned += 1
                _kind, broker_ms = msg.timestamp()
                if until_ms is not None and broker_ms > until_ms + SKEW_MS:
                    break
                if msg.key() == key:
                    try:
                        record = self.codec.expect("ChatMessage", msg.value())
                    except CodecError:
                        record = None
                    if record is not None and matches(record):
                        found.append(message_json(record))
                        if limit is not None and len(found) > limit:
                            break
                if offset >= end - 1:
                    break
        finally:
            consumer.unassign()
        return found, scanned
