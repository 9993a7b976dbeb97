"""The foundation against the real broker: topics, schemas, commits, skipping bad records."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from objectstore.local import LocalStore
from pipeline.errors import TopicMismatch
from pipeline.ladder import DEFAULT_LADDER, Ladder
from schemas.codec import Codec, Schema
from schemas.records import gop_to_record
from tests.mediafixtures import cached_flv, gops_from_flv
from tests.unit.test_codec import SAMPLES
from topics.admin import ensure_topics, group_lag
from topics.client import CheckedProducer, make_consumer, poll_checked
from topics.reader import read
from topics.specs import DEAD_LETTERS, GOPS, SEGMENTS, TopicSpec, all_topics
from workers.transcode.worker import TranscodeWorker

pytestmark = pytest.mark.integration


def _spec(name: str, **config: str) -> TopicSpec:
    return TopicSpec(name, "test", 2, {"retention.ms": "3600000", **config})


def _read(bootstrap: str, topic: str, count: int, timeout_s: float = 20.0) -> list[bytes]:
    consumer = make_consumer(bootstrap, None)
    partitions = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions.partitions])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < count and time.monotonic() < deadline:
            msg = poll_checked(consumer, 0.2)
            if msg is not None:
                values.append(msg.value() or b"")
    finally:
        consumer.close()
    return values


def test_ensure_topics_creates_once_and_reconciles_config(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = f"test.{unique_name}"
    assert ensure_topics(kafka_bootstrap, [_spec(topic)]) == [topic]
    assert ensure_topics(kafka_bootstrap, [_spec(topic)]) == []
    ensure_topics(kafka_bootstrap, [_spec(topic, **{"retention.ms": "7200000"})])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    from confluent_kafka.admin import ConfigResource, ResourceType

    resource = ConfigResource(ResourceType.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result()
    assert config["retention.ms"].value == "7200000"


def test_a_partition_count_is_never_changed_by_a_start(
    kafka_bootstrap: str, unique_name: str
) -> None:
    """Growing a keyed topic moves keys to other partitions: ensure_topics refuses, naming the
    topic, and leaves it as it was (before, it raised the count on every start)."""
    topic = f"test.{unique_name}"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, "test", 1)])
    with pytest.raises(TopicMismatch, match=f"{topic} has 1 partitions, its spec asks for 3"):
        ensure_topics(kafka_bootstrap, [TopicSpec(topic, "test", 3, {"retention.ms": "7200000"})])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 1
    from confluent_kafka.admin import ConfigResource, ResourceType

    resource = ConfigResource(ResourceType.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result()
    assert config["retention.ms"].value != "7200000", "nothing is changed when refusing"


def test_declared_topics_exist_with_their_config(kafka_bootstrap: str) -> None:
    specs = all_topics()
    ensure_topics(kafka_bootstrap, specs)
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics().topics
    for spec in specs:
        assert spec.name in topics
    gops = next(s for s in specs if s.name == GOPS)
    assert int(gops.config["max.message.bytes"]) >= 16 * 1024 * 1024


def test_every_schema_round_trips_through_the_broker(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = f"test.{unique_name}"
    ensure_topics(kafka_bootstrap, [_spec(topic)])
    codec = Codec()
    producer = CheckedProducer(kafka_bootstrap)
    for name, record in SAMPLES.items():
        producer.produce(topic, name, codec.encode(name, record))
    assert len(producer.flush()) == len(SAMPLES)
    decoded = dict(codec.decode(value) for value in _read(kafka_bootstrap, topic, len(SAMPLES)))
    assert set(decoded) == set(SAMPLES)
    for name, record in SAMPLES.items():
        assert {k: decoded[name][k] for k in record} == record


def test_a_multi_megabyte_gop_fits(kafka_bootstrap: str, unique_name: str) -> None:
    """A 12 MiB chunk goes through a topic configured like the GOP topic (not the real one:
    live workers would meet it)."""
    gops = next(s for s in all_topics() if s.name == GOPS)
    topic = f"test.{unique_name}"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, gops.key, 1, dict(gops.config))])
    big = bytes(range(256)) * (12 * 4096)
    delivery = CheckedProducer(kafka_bootstrap).send(topic, "big", big)
    assert delivery.offset == 0
    assert _read(kafka_bootstrap, topic, 1) == [big]


def test_committed_offset_survives_a_broker_restart(
    kafka_bootstrap: str, unique_name: str, kafka_restart: Callable[[], None]
) -> None:
    topic, group = f"test.{unique_name}", f"test-group-{unique_name}"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, "test", 1)])
    producer = CheckedProducer(kafka_bootstrap)
    for n in range(10):
        producer.produce(topic, "k", str(n).encode())
    producer.flush()

    consumer = make_consumer(kafka_bootstrap, group, topics=[topic])
    seen = []
    while len(seen) < 4:
        msg = poll_checked(consumer, 1.0)
        if msg is not None:
            seen.append(msg.value())
            consumer.commit(message=msg, asynchronous=False)
    consumer.close()
    assert seen == [b"0", b"1", b"2", b"3"]

    kafka_restart()

    assert [p.committed for p in group_lag(kafka_bootstrap, group, topic)] == [4]
    consumer = make_consumer(kafka_bootstrap, group, topics=[topic])
    msg = None
    deadline = time.monotonic() + 30
    while msg is None and time.monotonic() < deadline:
        msg = poll_checked(consumer, 1.0)
    consumer.close()
    assert msg is not None and msg.value() == b"4"


def _segment_objects(store: LocalStore, folder: str) -> set[int]:
    """The sequences the store holds segments of under `folder`, each written whole: its
    MPEG-TS segment, its CMAF segment and CMAF parts 0..n (and their init segment)."""
    keys = [k.removeprefix(folder) for k in store.list("streams/")]
    assert all(not k.startswith("streams/") for k in keys), keys  # nothing elsewhere
    inits = [k for k in keys if k.startswith("init-")]
    assert len(inits) <= 1, keys
    sequences = {int(k.split(".")[0]) for k in keys if k not in inits}
    for sequence in sequences:
        names = sorted(k for k in keys if k.startswith(f"{sequence:06d}."))
        parts = [n for n in names if n.count(".") == 2]
        assert f"{sequence:06d}.ts" in names and f"{sequence:06d}.m4s" in names, names
        assert sorted(int(n.split(".")[1]) for n in parts) == list(range(len(parts))), names
        assert len(parts) >= 5 and len(names) == len(parts) + 2, names
    return sequences


def test_corrupt_and_unknown_records_are_skipped_and_counted(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """A real transcode worker meets garbage, a record of a schema it does not know, then a
    real GOP: it skips and counts the first two, turns the GOP into a segment, and commits."""
    topic = f"test.{unique_name}"
    ensure_topics(kafka_bootstrap, [_spec(topic, **{"max.message.bytes": "16777216"})])
    ensure_topics(kafka_bootstrap, all_topics())
    gop = gops_from_flv(cached_flv(tmp_path, 2.0, size="640x360"), unique_name)[0]
    codec = Codec()
    stranger = Schema.from_json(
        {
            "type": "record",
            "name": "Stranger",
            "namespace": "elsewhere",
            "fields": [{"name": "x", "type": "long"}],
        }
    )
    unknown = Codec({"Stranger": stranger}).encode("Stranger", {"x": 1})
    producer = CheckedProducer(kafka_bootstrap)
    for value in (b"\xc3\x01garbage", unknown):
        producer.produce(topic, unique_name, value)
    producer.produce(
        topic,
        unique_name,
        codec.encode("GopChunk", gop_to_record(gop, channel="test", ingest_time_ms=0)),
    )
    producer.flush()

    store = LocalStore(tmp_path / "store")
    ladder = Ladder.parse(DEFAULT_LADDER)
    worker = TranscodeWorker(
        kafka_bootstrap,
        ladder.get("360p30"),
        ladder,
        store,
        topic=topic,
        group=f"test-{unique_name}",
    )
    consumer = make_consumer(kafka_bootstrap, worker.group, topics=[topic])
    segments = make_consumer(kafka_bootstrap, None)
    ends = [TopicPartition(SEGMENTS, p) for p in range(6)]
    for tp in ends:  # from the current end, resolved now, before the worker produces
        tp.offset = segments.get_watermark_offsets(tp, timeout=10)[1]
    segments.assign(ends)
    deadline = time.monotonic() + 60
    handled = 0
    while handled < 3 and time.monotonic() < deadline:
        msg = poll_checked(consumer, 0.5)
        if msg is not None:
            worker.handle(msg, consumer, CheckedProducer(kafka_bootstrap))
            handled += 1
    consumer.close()
    assert handled == 3
    assert worker.bad.value == 2
    assert _segment_objects(store, f"streams/{unique_name}/360p30/") == {0}
    assert [p.lag for p in group_lag(kafka_bootstrap, worker.group or "", topic)] == [0, 0]
    ready = []
    while time.monotonic() < deadline and not ready:
        msg = poll_checked(segments, 0.5)
        if msg is not None and msg.key() == unique_name.encode():
            ready.append(codec.expect("SegmentReady", msg.value()))
    segments.close()
    assert ready and ready[0]["key"] == f"streams/{unique_name}/360p30/000000.ts"


def test_a_chunk_that_fails_every_attempt_is_dead_lettered_and_the_partition_goes_on(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """A chunk meeting a bug (anything but Kafka or the store failing) used to crash the
    worker on the same offset for ever: now it is tried again, written to onair.deadletter
    with its story, and passed; the next chunk is transcoded and the group commits both."""
    topic = f"test.{unique_name}"
    ensure_topics(kafka_bootstrap, [_spec(topic, **{"max.message.bytes": "16777216"})])
    ensure_topics(kafka_bootstrap, all_topics())
    gops = gops_from_flv(cached_flv(tmp_path, 4.0, size="640x360"), unique_name)[:2]
    codec = Codec()
    producer = CheckedProducer(kafka_bootstrap)
    for gop in gops:
        record = gop_to_record(gop, channel="test", ingest_time_ms=0)
        producer.produce(topic, unique_name, codec.encode("GopChunk", record))
    producer.flush()
    store = LocalStore(tmp_path / "store")
    ladder = Ladder.parse(DEFAULT_LADDER)
    worker = TranscodeWorker(
        kafka_bootstrap, ladder.get("360p30"), ladder, store, topic=topic,
        group=f"test-{unique_name}",
    )  # fmt: skip
    worker.dead_letters.pause_s = 0.01
    process = worker.core.process
    calls: list[int] = []

    def buggy(record: dict[str, Any], position: tuple[int, int] = (0, 0)) -> Any:
        calls.append(record["sequence"])
        if record["sequence"] == gops[0].sequence:
            raise IndexError("a bug meeting odd data")
        return process(record, position)

    worker.core.process = buggy  # type: ignore[method-assign]
    consumer = make_consumer(kafka_bootstrap, worker.group, topics=[topic])
    deadline = time.monotonic() + 60
    handled = 0
    while handled < 2 and time.monotonic() < deadline:
        msg = poll_checked(consumer, 0.5)
        if msg is not None:
            worker.handle(msg, consumer, producer)
            handled += 1
    consumer.close()
    assert handled == 2
    assert calls.count(gops[0].sequence) == worker.dead_letters.attempts
    assert _segment_objects(store, f"streams/{unique_name}/360p30/") == {gops[1].sequence}
    assert [p.lag for p in group_lag(kafka_bootstrap, worker.group or "", topic)] == [0, 0]
    dead = [
        codec.expect("DeadLetter", msg.value())
        for msg in read(kafka_bootstrap, DEAD_LETTERS, idle_timeout_s=10)
        if msg.key() == (worker.group or "").encode()
    ]
    assert len(dead) == 1
    assert (dead[0]["topic"], dead[0]["error"]) == (topic, "IndexError: a bug meeting odd data")
    assert codec.expect("GopChunk", dead[0]["value"])["sequence"] == gops[0].sequence
