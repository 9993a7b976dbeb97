"""`ChangelogTable`: the packager's state, a dict of JSON values whose changes go to a
compacted changelog topic and are read back from it when a partition is taken over."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from topics.client import CheckedProducer, make_consumer


class ChangelogTable(MutableMapping[str, Any]):
    """A dict of JSON values whose changes go to a compacted changelog topic.

    Writes land in memory at once and are queued; `produce_changes()` sends them to the
    partition `partition` names (the source event's), and the caller flushes the producer
    before it commits the event. `restore()` reads the changelog partitions of newly assigned
    source partitions to their end; `drop()` forgets revoked ones."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.partition = 0  # the partition of the event being handled
        self._data: dict[str, Any] = {}
        self._partition_of: dict[str, int] = {}
        self._changes: dict[str, tuple[int, Any]] = {}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._partition_of[key] = self.partition
        self._changes[key] = (self.partition, value)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._changes[key] = (self._partition_of.pop(key, self.partition), None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def discard_changes(self) -> None:
        self._changes.clear()

    def produce_changes(self, producer: CheckedProducer) -> int:
        """Queue every change since the last call; → how many."""
        changes, self._changes = self._changes, {}
        for key, (partition, value) in changes.items():
            payload = None if value is None else json.dumps(value).encode()
            producer.produce(self.topic, json.dumps(key).encode(), payload, partition=partition)
        return len(changes)

    def restore(self, bootstrap: str, partitions: list[int], timeout_s: float = 60.0) -> int:
        """Load the state of `partitions` from the changelog; → records read."""
        if not partitions:
            return 0
        eof: dict[str, Any] = {"enable.partition.eof": True}
        reader = make_consumer(bootstrap, None, **eof)
        try:
            ends: dict[int, int] = {}
            for p in partitions:
                ends[p] = reader.get_watermark_offsets(TopicPartition(self.topic, p), 10)[1]
            pending = {p for p, end in ends.items() if end > 0}
            reader.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in pending])
            deadline = time.monotonic() + timeout_s
            count = 0
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.topic}: not restored within {timeout_s:.0f} s")
                msg = reader.poll(0.2)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    # the end, even when compaction removed the record just before it
                    pending.discard(msg.partition() or 0)
                    continue
                key = json.loads(msg.key() or b'""')
                value = msg.value()
                partition = msg.partition() or 0
                if value is None:
                    self._data.pop(key, None)
                    self._partition_of.pop(key, None)
                else:
                    self._data[key] = json.loads(value)
                    self._partition_of[key] = partition
                count += 1
                if (msg.offset() or 0) + 1 >= ends[partition]:
                    pending.discard(partition)
            return count
        finally:
            reader.close()

    def drop(self, partitions: set[int]) -> None:
        for key in [k for k, p in self._partition_of.items() if p in partitions]:
            self._data.pop(key, None)
            del self._partition_of[key]
