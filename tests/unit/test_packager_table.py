"""ChangelogTable: writes land at once, go to the source event's partition as JSON, and are
produced only when asked (after the playlists are written); a revoked partition's keys go."""

from __future__ import annotations

import json
from typing import Any

from workers.packager.table import ChangelogTable


class RecordingProducer:
    """Stands in for CheckedProducer.produce: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []

    def produce(
        self, topic: str, key: Any, value: bytes | None, partition: int | None = None
    ) -> None:
        self.sent.append((topic, key, value, partition))


def test_changes_go_to_the_partition_of_the_event_as_json() -> None:
    table = ChangelogTable("app-windows-changelog")
    producer = RecordingProducer()
    table.partition = 4
    table["s1/720p30"] = {"next_sequence": 3}
    table["s1/720p30"] = {"next_sequence": 4}  # only the last value of a key is sent
    table.partition = 1
    table["s2/160p30"] = {"next_sequence": 0}
    assert table["s1/720p30"] == {"next_sequence": 4}
    assert table.produce_changes(producer) == 2  # type: ignore[arg-type]
    assert producer.sent == [
        ("app-windows-changelog", b'"s1/720p30"', b'{"next_sequence": 4}', 4),
        ("app-windows-changelog", b'"s2/160p30"', b'{"next_sequence": 0}', 1),
    ]
    assert table.produce_changes(producer) == 0  # type: ignore[arg-type]


def test_a_delete_is_a_tombstone_in_the_keys_own_partition() -> None:
    table = ChangelogTable("t")
    producer = RecordingProducer()
    table.partition = 2
    table["k"] = [1]
    table.produce_changes(producer)  # type: ignore[arg-type]
    table.partition = 5
    del table["k"]
    table.produce_changes(producer)  # type: ignore[arg-type]
    assert producer.sent[-1] == ("t", json.dumps("k").encode(), None, 2)
    assert "k" not in table


def test_discarded_changes_are_not_sent_and_revoked_partitions_forgotten() -> None:
    table = ChangelogTable("t")
    producer = RecordingProducer()
    table.partition = 0
    table["a"] = 1
    table.partition = 3
    table["b"] = 2
    assert table.produce_changes(producer) == 2  # type: ignore[arg-type]
    table.partition = 0
    table["c"] = 3
    table["a"] = 9
    table.discard_changes()
    assert table.produce_changes(producer) == 0  # type: ignore[arg-type]
    assert dict(table) == {"a": 1, "b": 2}, "a discarded change is undone in memory too"
    table.drop({3})
    assert dict(table) == {"a": 1}


def test_a_value_changed_in_place_is_not_changed_in_the_table() -> None:
    """What the packager reads is a copy: mutating it without storing it back changes
    nothing, so an event that fails half-way leaves the table as it was (and a retry of the
    event in the same process sees the state from before it)."""
    table = ChangelogTable("t")
    producer = RecordingProducer()
    table["w"] = {"segments": [1, 2]}
    table.produce_changes(producer)  # type: ignore[arg-type]
    state = table["w"]
    state["segments"].append(3)
    assert table["w"] == {"segments": [1, 2]}
    table["w"] = state
    table.discard_changes()
    assert table["w"] == {"segments": [1, 2]}
