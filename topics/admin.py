"""Topic administration: ensure every declared topic exists with its config; describe; lag."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from pipeline.errors import TopicMismatch
from topics.client import make_consumer
from topics.ready import wait_for_topics
from topics.specs import TopicSpec

logger = logging.getLogger(__name__)


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


MIGRATE_DOC = "docs/operations.md#changing-a-topics-partition-count"


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create missing topics and reconcile configs; never change a partition count.

    A topic that exists with another partition count than its spec raises `TopicMismatch`
    before anything is changed: every onair topic is keyed, and growing one moves keys to
    other partitions (a stream's GOPs out of order, chat servers reading the wrong partition,
    the packager's tables no longer co-partitioned). Returns the names of topics it created,
    once every partition of every topic has a leader that serves it (a topic created a moment
    ago has none yet). "Already exists" counts as success (another process may create them at
    the same moment).
    """
    admin = admin_client(bootstrap)
    specs = list(specs)
    existing = admin.list_topics(timeout=timeout).topics
    check_partition_counts(specs, {name: len(meta.partitions) for name, meta in existing.items()})
    created: list[str] = []
    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication, config=s.topic_config) for s in missing],
            operation_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
                logger.info("created topic %s", name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    present = [s for s in specs if s.name in existing]
    if present:
        _reconcile_configs(admin, present, timeout)
    wait_for_topics(bootstrap, [s.name for s in specs])
    return created


def check_partition_counts(specs: Iterable[TopicSpec], counts: dict[str, int]) -> None:
    """Raise `TopicMismatch` naming every existing topic whose partition count is not its
    spec's, and how to migrate."""
    wrong = [
        f"{spec.name} has {counts[spec.name]} partitions, its spec asks for {spec.partitions}"
        for spec in specs
        if spec.name in counts and counts[spec.name] != spec.partitions
    ]
    if wrong:
        raise TopicMismatch(
            "; ".join(wrong) + ". onair never changes a keyed topic's partition count on its "
            "own (keys would move to other partitions): set ONAIR_PARTITIONS to the topics' "
            f"count, or migrate them as {MIGRATE_DOC} describes"
        )


def _reconcile_configs(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> None:
    resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in specs]
    described = admin.describe_configs(resources, request_timeout=timeout)
    changes = []
    for spec, resource in zip(specs, resources, strict=True):
        current = described[resource].result()
        entries = [
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in spec.topic_config.items()
            if k not in current or current[k].value != v
        ]
        if entries:
            changes.append(
                ConfigResource(ResourceType.TOPIC, spec.name, incremental_configs=entries)
            )
    if changes:
        for future in admin.incremental_alter_configs(changes).values():
            future.result()
        logger.info("reconciled configs of %s", ", ".join(c.name for c in changes))


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int  # -1 when the group has committed nothing
    end: int

    @property
    def lag(self) -> int:
        return self.end - max(self.committed, 0)


_RETRIABLE = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
}


def group_lag(bootstrap: str, group: str, topic: str, timeout: float = 10.0) -> list[PartitionLag]:
    """Committed offset vs log end offset for each partition of `topic` in `group`.

    Retries while the broker is still loading (just after a restart or a topic creation)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _group_lag(bootstrap, group, topic, timeout)
        except KafkaException as exc:
            if exc.args[0].code() not in _RETRIABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _group_lag(bootstrap: str, group: str, topic: str, timeout: float) -> list[PartitionLag]:
    # Committed offsets through a consumer of the group that never joins it (no subscribe),
    # not AdminClient.list_consumer_group_offsets: librdkafka 2.16 dereferences a null
    # consumer-group handle when that admin request meets COORDINATOR_LOAD_IN_PROGRESS
    # (seen here right after a broker restart: SIGSEGV in rd_kafka_cgrp_op).
    reader = make_consumer(bootstrap, group)
    try:
        metadata = reader.list_topics(topic, timeout=timeout).topics[topic]
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        committed = {
            tp.partition: max(tp.offset, -1) for tp in reader.committed(partitions, timeout)
        }
        lags = []
        for tp in partitions:
            _low, high = reader.get_watermark_offsets(tp, timeout=timeout)
            lags.append(PartitionLag(topic, tp.partition, committed.get(tp.partition, -1), high))
        return lags
    finally:
        reader.close()


def list_groups(bootstrap: str, timeout: float = 10.0) -> list[str]:
    admin = admin_client(bootstrap)
    result = admin.list_consumer_groups(request_timeout=timeout).result()
    return sorted(g.group_id for g in result.valid)
