"""Three KRaft brokers, replication 3, min.insync.replicas 2: losing one loses nothing acked."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition

from tests.conftest import KafkaCluster
from topics.admin import ensure_topics
from topics.client import CheckedProducer, DeliveryError, make_consumer, poll_checked
from topics.specs import TopicSpec

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def test_stopping_one_broker_loses_no_acknowledged_message(
    kafka_cluster: KafkaCluster, unique_name: str
) -> None:
    topic = f"test.{unique_name}"
    spec = TopicSpec(topic, "test", 3, {"min.insync.replicas": "2"})
    ensure_topics(kafka_cluster.bootstrap, [spec], replication=3)
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
