"""The bounded reads on the real broker, mostly on topics of their own: a stream's lifecycle
read back (one partition up to an offset, or every partition), a channel's title at a time,
a stream's segments until every end marker (or a foreign stream at once), the packager's
changelog restore, and the rebuild's GOP read refusing chunks lost under it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.channels import new_stream_id
from schemas.codec import Codec
from tests.integration.test_follower import _produce, _topic
from topics.admin import ensure_topics
from topics.client import CheckedProducer
from topics.specs import CHANNELS, all_topics
from workers.packager.table import ChangelogTable
from workers.rebuild.plan import RebuildError, ReplayRange
from workers.rebuild.replay import _chunks
from workers.vod.history import channel_info_at, collect_segments, read_stream_history

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CODEC = Codec()


def _event(name: str, record: dict[str, Any]) -> bytes:
    return CODEC.encode(name, record)


def test_stream_history_reads_one_partition_up_to_an_offset_or_everything(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = _topic(kafka_bootstrap, unique_name, 2)
    channel = f"hist_{uuid.uuid4().hex[:8]}"
    stream_id = new_stream_id(channel, int(time.time() * 1000))
    key = channel.encode()

    def updated(title: str) -> bytes:
        record = {"stream_id": stream_id, "channel": channel, "updated_ms": 1, "title": title}
        return _event("StreamUpdated", record)

    started = {
        "stream_id": stream_id, "channel": channel, "started_ms": 1, "width": 1280,
        "height": 720, "fps": 30.0, "renditions": ["720p30"],
    }  # fmt: skip
    ended = {
        "stream_id": stream_id, "channel": channel, "ended_ms": 2, "reason": "unpublish",
        "last_sequence": 9,
    }  # fmt: skip
    _produce(
        kafka_bootstrap, topic, [(1, _event("StreamStarted", started)), (1, updated("a"))], key=key
    )
    other = {**started, "stream_id": f"{stream_id}x", "channel": "other"}
    _produce(kafka_bootstrap, topic, [(1, _event("StreamStarted", other))], key=b"other")
    [(_, end_offset, _)] = _produce(
        kafka_bootstrap, topic, [(1, _event("StreamEnded", ended))], key=key
    )
    _produce(kafka_bootstrap, topic, [(1, updated("after the end")), (0, updated("p0"))], key=key)

    bounded = read_stream_history(
        kafka_bootstrap, stream_id, topic=topic, partition=1, until_offset=end_offset
    )
    assert bounded.started is not None and bounded.started["renditions"] == ["720p30"]
    assert bounded.ended is not None and bounded.ended["last_sequence"] == 9
    assert [u["title"] for u in bounded.updates] == ["a"]
    everything = read_stream_history(kafka_bootstrap, stream_id, topic=topic)
    assert sorted(u["title"] for u in everything.updates) == ["a", "after the end", "p0"]


def test_channel_title_at_a_time(kafka_bootstrap: str) -> None:
    ensure_topics(kafka_bootstrap, all_topics())
    channel = f"title_{uuid.uuid4().hex[:8]}"
    base = {"name": channel, "stream_key_hash": "ab" * 32, "key_version": 1, "created_ms": 1}
    producer = CheckedProducer(kafka_bootstrap)
    for title, updated_ms in (("one", 1_000), ("two", 2_000)):
        record = {**base, "updated_ms": updated_ms, "title": title, "category": "games"}
        producer.send(CHANNELS, channel, _event("Channel", record))
    assert channel_info_at(kafka_bootstrap, channel, 1_500) == ("one", "games")
    assert channel_info_at(kafka_bootstrap, channel, 2_500) == ("two", "games")
    assert channel_info_at(kafka_bootstrap, f"{channel}_none", 2_500) == (None, None)


def _segment(stream_id: str, rendition: str, sequence: int, end: bool = False) -> bytes:
    record = {
        "stream_id": stream_id, "channel": "c", "rendition": rendition, "sequence": sequence,
        "key": f"streams/{stream_id}/{rendition}/{sequence:06d}.ts", "start_pts_90k": 0,
        "duration_90k": 180_000, "size_bytes": 10, "bitrate_bps": 40, "width": 1280,
        "height": 720, "fps": 30.0, "codecs": "avc1.64001f", "program_date_time_ms": 1,
        "ingest_time_ms": 1, "renditions": ["720p30", "480p30"], "end_of_stream": end,
    }  # fmt: skip
    return _event("SegmentReady", record)


def test_segments_are_collected_until_every_end_marker_or_a_foreign_one(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = _topic(kafka_bootstrap, unique_name, 3)
    stream_id = f"seg-{uuid.uuid4().hex[:8]}"
    items = [(1, _segment(stream_id, r, n)) for n in range(3) for r in ("720p30", "480p30")]
    items += [(1, _segment(stream_id, r, 3, end=True)) for r in ("720p30", "480p30")]
    since_ms = int(time.time() * 1000) - 60_000
    _produce(kafka_bootstrap, topic, items, key=stream_id.encode())
    _produce(kafka_bootstrap, topic, [(1, _segment("another", "720p30", 0))], key=b"another")
    expected = ["720p30", "480p30"]

    found = collect_segments(kafka_bootstrap, stream_id, since_ms, expected, topic=topic, wait_s=30)
    assert found.complete(expected) and not found.foreign
    assert {r: sorted(s) for r, s in found.segments.items()} == {r: [0, 1, 2] for r in expected}

    foreign = collect_segments(
        kafka_bootstrap, stream_id, None, expected, topic=topic, owned=lambda record: False
    )
    assert foreign.foreign and not foreign.complete(expected)

    started = time.monotonic()
    nothing = collect_segments(
        kafka_bootstrap, "none", since_ms, expected, topic=topic, first_wait_s=1
    )
    assert not nothing.segments and time.monotonic() - started < 10


def test_a_changelog_is_restored_to_its_end(kafka_bootstrap: str, unique_name: str) -> None:
    topic = _topic(kafka_bootstrap, unique_name, 3, **{"cleanup.policy": "compact"})
    table = ChangelogTable(topic)
    producer = CheckedProducer(kafka_bootstrap)
    for partition, key, value in ((0, "a", {"n": 1}), (1, "b", {"n": 2}), (0, "c", {"n": 3})):
        table.partition = partition
        table[key] = value
    assert table.produce_changes(producer) == 3
    table.partition = 0
    del table["a"]
    table.produce_changes(producer)
    producer.flush()

    restored = ChangelogTable(topic)
    assert restored.restore(kafka_bootstrap, []) == 0
    assert restored.restore(kafka_bootstrap, [0, 1, 2], timeout_s=30) == 4  # 2 is empty
    assert dict(restored) == {"b": {"n": 2}, "c": {"n": 3}}
    restored.drop({1})
    assert dict(restored) == {"c": {"n": 3}}


def test_the_rebuild_read_refuses_chunks_lost_under_it(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = _topic(kafka_bootstrap, unique_name, 1)
    _produce(kafka_bootstrap, topic, [(0, b"g%d" % i) for i in range(5)], key=b"s")
    kept = [msg.value() for msg in _chunks(kafka_bootstrap, ReplayRange(topic, 0, 1, 3, 3))]
    assert kept == [b"g1", b"g2", b"g3"]

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 3)]).values():
        future.result()
    with pytest.raises(RebuildError, match=rf"reading {topic}\[0\] at offset 1: "):
        list(_chunks(kafka_bootstrap, ReplayRange(topic, 0, 1, 4, 4)))
