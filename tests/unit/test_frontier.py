"""OffsetFrontier: commit up to the first unfinished record, never past it."""

from __future__ import annotations

from topics.frontier import OffsetFrontier


def test_out_of_order_finishes_commit_only_the_finished_prefix() -> None:
    frontier = OffsetFrontier()
    for offset in (10, 11, 12):
        frontier.take(0, offset)
    frontier.finish(0, 11)
    frontier.finish(0, 12)
    assert frontier.advance() == {}, "10 is still being worked on"
    frontier.finish(0, 10)
    assert frontier.advance() == {0: 13}
    assert frontier.advance() == {}


def test_partitions_are_independent() -> None:
    frontier = OffsetFrontier()
    frontier.take(0, 5)
    frontier.take(1, 7)
    frontier.finish(1, 7)
    assert frontier.advance() == {1: 8}
    assert frontier.pending(0) == 1


def test_a_forgotten_partition_commits_nothing_even_when_its_work_finishes() -> None:
    frontier = OffsetFrontier()
    frontier.take(2, 3)
    frontier.forget([2])
    frontier.finish(2, 3)
    assert frontier.advance() == {}
    frontier.take(2, 9)  # assigned again later: starts afresh
    frontier.finish(2, 9)
    assert frontier.advance() == {2: 10}
