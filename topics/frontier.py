"""`OffsetFrontier`: what a consumer may commit when it finishes records out of order.

A role that works on several records of one partition at once (the VOD worker builds several
streams' VODs in parallel) may commit a partition only up to its first unfinished record:
its successor must redo that one, and may redo the finished ones after it (every output is
keyed and overwritten alike). Pure bookkeeping, no Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable


class OffsetFrontier:
    def __init__(self) -> None:
        self._open: dict[int, dict[int, bool]] = {}  # partition → offset → finished
        self._committed: dict[int, int] = {}

    def take(self, partition: int, offset: int) -> None:
        """A record is being worked on."""
        self._open.setdefault(partition, {})[offset] = False

    def finish(self, partition: int, offset: int) -> None:
        """Its work is durable; a forgotten partition's late finish is ignored."""
        records = self._open.get(partition)
        if records is not None and offset in records:
            records[offset] = True

    def advance(self) -> dict[int, int]:
        """Per partition whose frontier moved since the last call: the offset to commit (one
        past the last record of the finished prefix)."""
        moved: dict[int, int] = {}
        for partition, records in self._open.items():
            commit = None
            for offset in sorted(records):
                if not records[offset]:
                    break
                commit = offset + 1
                del records[offset]
            if commit is not None and commit > self._committed.get(partition, -1):
                self._committed[partition] = commit
                moved[partition] = commit
        return moved

    def pending(self, partition: int) -> int:
        return sum(not done for done in self._open.get(partition, {}).values())

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions went to another consumer: nothing of theirs is committed from here."""
        for partition in partitions:
            self._open.pop(partition, None)
            self._committed.pop(partition, None)
