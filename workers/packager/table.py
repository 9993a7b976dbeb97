"""`ChangelogTable`: the packager's state, a dict of JSON values whose changes go to a
compacted changelog topic and are read back from it when a partition is taken over (a bounded
`topics.reader.read`: to each partition's end when the restore began, that end reached by the
end-of-partition event even when compaction removed the record just before it)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, MutableMapping
from typing import Any

from topics.client import CheckedProducer
from topics.reader import read

_ABSENT = object()


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
        self._undo: dict[str, tuple[Any, int | None]] = {}

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._data[key])  # changed only through __setitem__ (undoable)

    def __setitem__(self, key: str, value: Any) -> None:
        self._remember(key)
        self._data[key] = copy.deepcopy(value)
        self._partition_of[key] = self.partition
        self._changes[key] = (self.partition, value)

    def __delitem__(self, key: str) -> None:
        self._remember(key)
        del self._data[key]
        self._changes[key] = (self._partition_of.pop(key, self.partition), None)

    def _remember(self, key: str) -> None:
        """The value (and partition) before the first change since the last produce."""
        if key not in self._undo:
            self._undo[key] = (self._data.get(key, _ABSENT), self._partition_of.get(key))

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def discard_changes(self) -> None:
        """Forget the changes since the last `produce_changes()` and undo them in memory."""
        for key, (value, partition) in self._undo.items():
            if value is _ABSENT:
                self._data.pop(key, None)
                self._partition_of.pop(key, None)
            else:
                self._data[key] = value
                if partition is not None:
                    self._partition_of[key] = partition
        self._undo.clear()
        self._changes.clear()

    def produce_changes(self, producer: CheckedProducer) -> int:
        """Queue every change since the last call; → how many."""
        changes, self._changes = self._changes, {}
        self._undo.clear()
        for key, (partition, value) in changes.items():
            payload = None if value is None else json.dumps(value).encode()
            producer.produce(self.topic, json.dumps(key).encode(), payload, partition=partition)
        return len(changes)

    def restore(self, bootstrap: str, partitions: list[int], timeout_s: float = 60.0) -> int:
        """Load the state of `partitions` from the changelog; → records read. Raises
        `TimeoutError` when nothing arrives for `timeout_s` before the end."""
        if not partitions:
            return 0
        count = 0
        for msg in read(bootstrap, self.topic, partitions=partitions, idle_timeout_s=timeout_s):
            key = json.loads(msg.key() or b'""')
            value = msg.value()
            if value is None:
                self._data.pop(key, None)
                self._partition_of.pop(key, None)
            else:
                self._data[key] = json.loads(value)
                self._partition_of[key] = msg.partition() or 0
            count += 1
        return count

    def drop(self, partitions: set[int]) -> None:
        for key in [k for k, p in self._partition_of.items() if p in partitions]:
            self._data.pop(key, None)
            del self._partition_of[key]
