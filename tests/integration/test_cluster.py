"""Three KRaft brokers, the product's own topic specs with replication 3 (so
min.insync.replicas 2): losing one broker loses nothing acknowledged."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from tests.conftest import KafkaCluster
from topics.admin import ensure_topics
from topics.client import CheckedProducer, DeliveryError, make_consumer, poll_checked
from topics.specs import GOPS, TopicSpec, all_topics

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def test_stopping_one_broker_loses_no_acknowledged_message(
    kafka_cluster: KafkaCluster, unique_name: str
) -> None:
    topic = f"test.{unique_name}"
    product = all_topics(partitions=3, replication=3)
    ensure_topics(kafka_cluster.bootstrap, product)
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    resources = [ConfigResource(ResourceType.TOPIC, spec.name) for spec in product]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result()["min.insync.replicas"].value == "2", resource.name
    # the stream under test goes to a topic shaped like the GOP topic (live roles may read
    # the product's own topics on this cluster)
    gops = next(spec for spec in product if spec.name == GOPS)
    spec = TopicSpec(topic, gops.key, 3, dict(gops.config), replication=3)
    assert spec.topic_config["min.insync.replicas"] == "2"
    ensure_topics(kafka_cluster.bootstrap, [spec])
    producer = CheckedProducer(kafka_cluster.bootstrap, **{"delivery.timeout.ms": 60_000})
    acked: set[bytes] = set()  # values of batches whose every message was acknowledged
    sent = 0
    for batch in range(6):
        if batch == 2:
            kafka_cluster.stop_node(2, kill=True)  # a broker dies mid-stream
        for _ in range(100):
            value = f"m{sent}".encode()
            producer.produce(topic, f"k{sent % 7}", value)
            sent += 1
        try:
            producer.flush(60)
        except DeliveryError:
            continue  # a batch with a failed delivery does not count as acknowledged
        acked.update(f"m{n}".encode() for n in range(sent - 100, sent))
    assert len(acked) >= 500, "two of three brokers must keep accepting acks=all writes"

    consumer = make_consumer(kafka_cluster.bootstrap, None)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    seen: set[bytes] = set()
    deadline = time.monotonic() + 60
    while not acked <= seen and time.monotonic() < deadline:
        msg = poll_checked(consumer, 0.5)
        if msg is not None:
            seen.add(msg.value() or b"")
    consumer.close()
    assert acked <= seen
