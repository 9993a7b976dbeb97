"""Topic specs: min.insync.replicas follows replication, partition counts are never changed."""

from __future__ import annotations

import pytest

from pipeline.errors import TopicMismatch
from topics.admin import check_partition_counts
from topics.specs import CHAT, GOPS, TopicSpec, all_topics, packager_changelogs


@pytest.mark.parametrize(
    ("replication", "min_insync"), [(1, "1"), (2, "1"), (3, "2"), (5, "4")], ids=str
)
def test_min_insync_replicas_is_replication_minus_one(replication: int, min_insync: str) -> None:
    specs = [*all_topics(replication=replication), *packager_changelogs("p", 6, replication)]
    for spec in specs:
        assert spec.replication == replication
        assert spec.topic_config["min.insync.replicas"] == min_insync, spec.name


def test_a_spec_may_set_min_insync_replicas_itself() -> None:
    spec = TopicSpec("t", "k", 1, {"min.insync.replicas": "3"}, replication=3)
    assert spec.topic_config["min.insync.replicas"] == "3"


def test_topic_config_keeps_the_spec_config() -> None:
    gops = next(s for s in all_topics() if s.name == GOPS)
    assert gops.config.items() <= gops.topic_config.items()


def test_a_different_partition_count_is_refused_naming_the_topic_and_the_way_out() -> None:
    specs = all_topics(partitions=6)
    with pytest.raises(TopicMismatch) as caught:
        check_partition_counts(specs, {CHAT: 12, GOPS: 6, "unrelated": 3})
    text = str(caught.value)
    assert f"{CHAT} has 12 partitions, its spec asks for 6" in text
    assert GOPS not in text
    assert "ONAIR_PARTITIONS" in text and "docs/operations.md" in text


def test_fewer_partitions_than_the_spec_is_refused_too() -> None:
    with pytest.raises(TopicMismatch, match=f"{GOPS} has 2 partitions"):
        check_partition_counts(all_topics(partitions=6), {GOPS: 2})


def test_matching_or_missing_topics_pass() -> None:
    check_partition_counts(all_topics(partitions=6), {GOPS: 6, CHAT: 6})
    check_partition_counts(all_topics(partitions=6), {})
