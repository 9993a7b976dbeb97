"""Every topic onair uses, declared once. No other file spells a topic name."""

from __future__ import annotations

from dataclasses import dataclass, field

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
GOP_MAX_BYTES = 16 * 1024 * 1024

GOPS = "onair.ingest.gops"
SEGMENTS = "onair.segments"
STREAMS = "onair.streams"
CHAT = "onair.chat"
MODERATION = "onair.moderation"
CHANNELS = "onair.channels"
VODS = "onair.vods"
SCHEMAS = "onair.schemas"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    key: str  # what the key means
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    doc: str = ""

    @property
    def compacted(self) -> bool:
        return self.config.get("cleanup.policy") == "compact"


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


def packager_changelogs(app_id: str, partitions: int) -> list[TopicSpec]:
    """The packager's changelog topics: co-partitioned with onair.segments, compacted."""
    return [
        TopicSpec(
            changelog_topic(app_id, table),
            "stream_id[/rendition]",
            partitions,
            {"cleanup.policy": "compact"},
            f"changelog of the packager's {table} table",
        )
        for table in PACKAGER_TABLES
    ]


def all_topics(partitions: int = 6, replay_retention_ms: int = 48 * HOUR_MS) -> list[TopicSpec]:
    """Every topic. `partitions` bounds how far each role scales out."""
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
        TopicSpec(MODERATION, "channel/user", partitions, _compacted(), "bans etc."),
        TopicSpec(CHANNELS, "channel", 1, _compacted(), "channels, stream keys hashed"),
        TopicSpec(VODS, "stream_id", 1, _compacted(), "the VOD catalog"),
        TopicSpec(SCHEMAS, "fingerprint hex", 1, _compacted(), "Avro writer schemas"),
    ]
    return specs
