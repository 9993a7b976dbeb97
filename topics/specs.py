"""Every topic onair uses, declared once. No other file spells a topic name."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
GOP_MAX_BYTES = 16 * 1024 * 1024

GOPS = "onair.ingest.gops"
SEGMENTS = "onair.segments"
PARTS = "onair.parts"
STREAMS = "onair.streams"
CHAT = "onair.chat"
MODERATION = "onair.moderation"
CHANNELS = "onair.channels"
VODS = "onair.vods"
SCHEMAS = "onair.schemas"
DEAD_LETTERS = "onair.deadletter"
INGEST_LEASES = "onair.ingest.leases"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as onair needs it. Every onair topic is keyed, so its partition count is part
    of its meaning (a key's partition is murmur2(key) % partitions): `ensure_topics` creates a
    topic with it and refuses to run beside a different one, never changing it.
    `min.insync.replicas` is replication - 1 (at least 1) unless the config says otherwise, so
    with three replicas an acknowledged write is on two brokers."""

    name: str
    key: str  # what the key means
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    doc: str = ""
    replication: int = 1

    @property
    def compacted(self) -> bool:
        return self.config.get("cleanup.policy") == "compact"

    @property
    def topic_config(self) -> dict[str, str]:
        """The config the topic is created and reconciled with."""
        return {"min.insync.replicas": str(max(1, self.replication - 1)), **self.config}


def _compacted() -> dict[str, str]:
    return {
        "cleanup.policy": "compact",
        "min.cleanable.dirty.ratio": "0.1",
        "segment.ms": str(HOUR_MS),
    }


# the packager's state tables and their changelog topics (named as faust named them, when the
# packager was a faust app, so state carries over); `onair package` creates them and waits
# for their leaders before it consumes
PACKAGER_TABLES = ("windows", "masters")


def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"


def packager_changelogs(app_id: str, partitions: int, replication: int = 1) -> list[TopicSpec]:
    """The packager's changelog topics: co-partitioned with onair.segments, compacted."""
    return [
        TopicSpec(
            changelog_topic(app_id, table),
            "stream_id[/rendition]",
            partitions,
            {"cleanup.policy": "compact"},
            f"changelog of the packager's {table} table",
            replication,
        )
        for table in PACKAGER_TABLES
    ]


def all_topics(
    partitions: int = 6, replay_retention_ms: int = 48 * HOUR_MS, replication: int = 1
) -> list[TopicSpec]:
    """Every topic. `partitions` bounds how far each role scales out; it is fixed once the
    topics exist (see `TopicSpec`)."""
    specs = [
        TopicSpec(
            GOPS,
            "stream_id",
            partitions,
            {
                "retention.ms": str(replay_retention_ms),
                "max.message.bytes": str(GOP_MAX_BYTES),
                "segment.bytes": str(256 * 1024 * 1024),
            },
            "raw GOP chunks from ingest; kept for the replay window",
        ),
        TopicSpec(
            SEGMENTS,
            "stream_id",
            partitions,
            {"retention.ms": str(7 * DAY_MS)},
            "SegmentReady: a rendition's segment is durable in the store",
        ),
        TopicSpec(
            PARTS,
            "stream_id",
            partitions,
            {"retention.ms": str(DAY_MS)},
            "PartReady: a CMAF part is durable; HLS origins wake blocked playlist requests",
        ),
        TopicSpec(
            STREAMS,
            "channel",
            partitions,
            {"retention.ms": str(30 * DAY_MS)},
            "stream lifecycle: StreamStarted/Resumed/Updated/Ended",
        ),
        TopicSpec(
            CHAT,
            "channel",
            partitions,
            {"retention.ms": str(7 * DAY_MS), "message.timestamp.type": "LogAppendTime"},
            "chat messages; every chat server with viewers of a channel reads its partition",
        ),
        TopicSpec(
            INGEST_LEASES,
            "channel",
            1,  # small records, read whole by every ingest: never a partition count to migrate
            {
                **_compacted(),
                # the ownership rules read the broker's append time, one clock for every reader
                "message.timestamp.type": "LogAppendTime",
                # compaction keeps a channel's last record only; an hour of a channel's history
                # stays whole, so a reader starting now folds exactly what the others folded
                "min.compaction.lag.ms": str(HOUR_MS),
            },
            "IngestLease: which ingest owns each channel's stream (gateway/ingest/lease.py)",
        ),
        TopicSpec(MODERATION, "channel/user", partitions, _compacted(), "bans etc."),
        TopicSpec(CHANNELS, "channel", 1, _compacted(), "channels, stream keys hashed"),
        TopicSpec(VODS, "stream_id", 1, _compacted(), "the VOD catalog"),
        TopicSpec(SCHEMAS, "fingerprint hex", 1, _compacted(), "Avro writer schemas"),
        TopicSpec(
            DEAD_LETTERS,
            "consumer group",
            1,
            {"retention.ms": str(30 * DAY_MS), "max.message.bytes": str(GOP_MAX_BYTES + 65536)},
            "DeadLetter: events a role gave up on, with the error and where they came from",
        ),
    ]
    return [replace(spec, replication=replication) for spec in specs]
