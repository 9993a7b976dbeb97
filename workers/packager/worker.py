"""The packager worker: the Kafka loop over `onair.segments` that applies each event with the
core, records the table changes, and only then commits (the order is in the package's
docstring)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message, TopicPartition

from pipeline.health import Health
from pipeline.metrics import Registry
from pipeline.store import ObjectStore
from topics.admin import ensure_topics
from topics.client import (
    CheckedProducer,
    consume,
    make_consumer,
    start_new_partitions_at_end,
)
from topics.deadletter import DeadLetters
from topics.ready import wait_for_topics
from topics.specs import PACKAGER_TABLES, SEGMENTS, changelog_topic, packager_changelogs
from workers.packager.core import Packager
from workers.packager.table import ChangelogTable

logger = logging.getLogger(__name__)


@dataclass
class PackagerWorker:
    """The packager role: consume onair.segments, keep the tables, write playlists."""

    bootstrap: str
    store: ObjectStore
    group: str = "onair-packager"
    window_size: int = 6
    partitions: int = 6
    replication: int = 1
    instance_id: str | None = None  # static group membership: a restart takes over at once
    registry: Registry = field(default_factory=Registry)
    health: Health = field(default_factory=lambda: Health("package"))
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.windows = ChangelogTable(changelog_topic(self.group, PACKAGER_TABLES[0]))
        self.masters = ChangelogTable(changelog_topic(self.group, PACKAGER_TABLES[1]))
        self.tables = (self.windows, self.masters)
        self.dead_letters = DeadLetters(self.group, registry=self.registry, stop=self.stop_event)
        self.packager = Packager(
            self.store,
            windows=self.windows,
            masters=self.masters,
            window_size=self.window_size,
            registry=self.registry,
        )

    def run(self) -> None:
        """Consume until `stop_event`. Store, delivery and commit failures raise: the process
        exits and its successor resumes from the last committed offset."""
        self.health.starting("creating the changelog topics")
        changelogs = packager_changelogs(self.group, self.partitions, self.replication)
        ensure_topics(self.bootstrap, changelogs)
        wait_for_topics(
            self.bootstrap,
            [SEGMENTS, *(c.name for c in changelogs)],
            group=self.group,
            on_wait=self.health.starting,
        )
        self.health.starting(f"joining group {self.group}")
        static = {"group.instance.id": self.instance_id} if self.instance_id else {}
        consumer = make_consumer(
            self.bootstrap,
            self.group,
            topics=[SEGMENTS],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._revoked,
            **static,
        )
        producer = CheckedProducer(self.bootstrap)
        logger.info("packager: consuming %s", SEGMENTS)
        try:
            consume(consumer, self.stop_event, lambda msg: self.handle(msg, consumer, producer))
        finally:
            consumer.close()

    def handle(self, msg: Message, consumer: Consumer, producer: CheckedProducer) -> None:
        def work() -> None:
            partition = msg.partition() or 0
            for table in self.tables:
                table.partition = partition
            try:
                self.packager.on_event(msg.value())
            except BaseException:
                for table in self.tables:  # unrecorded and undone: applied again from scratch
                    table.discard_changes()
                raise
            if sum(table.produce_changes(producer) for table in self.tables):
                producer.flush()
            consumer.commit(message=msg, asynchronous=False)

        def skip() -> None:
            consumer.commit(message=msg, asynchronous=False)

        self.dead_letters.handle(msg, producer, work, skip)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # a new group starts at the live edge, pinned at once (see start_new_partitions_at_end)
        start_new_partitions_at_end(consumer, partitions)
        numbers = sorted(tp.partition for tp in partitions)
        restored = sum(table.restore(self.bootstrap, numbers) for table in self.tables)
        if numbers:
            logger.info(
                "packager: assigned %s partitions %s; %d table records restored",
                SEGMENTS,
                numbers,
                restored,
            )
        self.health.ok()

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        del consumer
        gone = {tp.partition for tp in partitions}
        for table in self.tables:
            table.drop(gone)
