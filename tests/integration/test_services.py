"""The real services the suite runs on: Kafka in KRaft mode, S3Proxy, the 3-broker cluster."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__ there
    AdminClient,
    ConfigResource,
    NewTopic,
)

from tests.conftest import KafkaCluster, S3Config

ROOT = Path(__file__).resolve().parents[2]
SIXTEEN_MIB = 16 * 1024 * 1024


def _kafka_tool(*args: str) -> str:
    result = subprocess.run(
        [str(ROOT / "infra" / "kafka"), "tool", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _create_topic(bootstrap: str, name: str, replication: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, 1, replication)]).values():
        future.result(timeout=30)


def _consume_one(bootstrap: str, topic: str, group: str) -> Message:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "fetch.message.max.bytes": 2 * SIXTEEN_MIB,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None:
                assert message.error() is None, message.error()
                return message
        raise AssertionError(f"nothing consumed from {topic} in 60 s")
    finally:
        consumer.close()


@pytest.mark.integration
def test_broker_answers_metadata_in_kraft_mode(
    kafka_bootstrap: str, record_property: Callable[[str, object], None]
) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert metadata.brokers
    # DescribeQuorum only exists in KRaft: Kafka's own quorum tool proves the mode.
    quorum = _kafka_tool(
        "MetadataQuorumCommand", "--bootstrap-server", kafka_bootstrap, "describe", "--status"
    )
    assert f"ClusterId:              {metadata.cluster_id}" in quorum, quorum
    assert re.search(r"LeaderId:\s+\d+", quorum), quorum
    features = _kafka_tool("FeatureCommand", "--bootstrap-server", kafka_bootstrap, "describe")
    level = re.search(r"metadata\.version\s.*FinalizedVersionLevel:\s+(\S+)", features)
    assert level is not None, features
    record_property("kafka_metadata_version", level.group(1))
    assert level.group(1).startswith("4."), level.group(1)


@pytest.mark.integration
def test_broker_settings_the_pipeline_relies_on(kafka_bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    broker_id = next(iter(admin.list_topics(timeout=10).brokers))
    resource = ConfigResource(ConfigResource.Type.BROKER, str(broker_id))
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["auto.create.topics.enable"].value == "false"
    assert int(configs["message.max.bytes"].value) > SIXTEEN_MIB
    assert int(configs["replica.fetch.max.bytes"].value) > SIXTEEN_MIB
    assert configs["group.initial.rebalance.delay.ms"].value == "0"


@pytest.mark.integration
def test_sixteen_mib_message_round_trip(kafka_bootstrap: str, unique_name: str) -> None:
    topic = f"onair.test.{unique_name}"
    _create_topic(kafka_bootstrap, topic)
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "message.max.bytes": 2 * SIXTEEN_MIB,
        }
    )
    errors: list[KafkaError | None] = []
    payload = bytes(range(256)) * (SIXTEEN_MIB // 256)
    producer.produce(
        topic, key=b"stream-1", value=payload, on_delivery=lambda e, _m: errors.append(e)
    )
    assert producer.flush(60) == 0
    assert errors == [None]
    message = _consume_one(kafka_bootstrap, topic, f"g-{unique_name}")
    assert message.key() == b"stream-1"
    assert message.value() == payload


@pytest.mark.integration
def test_s3_round_trip_keeps_metadata(s3_config: S3Config, unique_name: str) -> None:
    client = s3_config.client()
    try:
        assert s3_config.bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]
        prefix = f"test/{unique_name}/"
        key = f"{prefix}720p60/seg_00000042.ts"
        body = b"\x47" + bytes(187) * 10
        client.put_object(
            Bucket=s3_config.bucket,
            Key=key,
            Body=body,
            ContentType="video/mp2t",
            CacheControl="public, max-age=31536000, immutable",
            Metadata={"stream-id": "s-1"},
        )
        head = client.head_object(Bucket=s3_config.bucket, Key=key)
        assert head["ContentType"] == "video/mp2t"
        assert head["CacheControl"] == "public, max-age=31536000, immutable"
        assert head["ContentLength"] == len(body)
        assert head["Metadata"] == {"stream-id": "s-1"}
        got = client.get_object(Bucket=s3_config.bucket, Key=key)
        assert got["Body"].read() == body
        assert got["ContentType"] == "video/mp2t"
        listed = client.list_objects_v2(Bucket=s3_config.bucket, Prefix=prefix)
        assert [o["Key"] for o in listed.get("Contents", [])] == [key]
        client.delete_object(Bucket=s3_config.bucket, Key=key)
        with pytest.raises(ClientError) as missing:
            client.head_object(Bucket=s3_config.bucket, Key=key)
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    finally:
        client.close()


@pytest.mark.cluster
def test_cluster_has_three_brokers_and_survives_one_down(
    kafka_cluster: KafkaCluster, unique_name: str
) -> None:
    assert kafka_cluster.live_brokers() == {1, 2, 3}
    topic = f"onair.test.{unique_name}"
    _create_topic(kafka_cluster.bootstrap, topic, replication=3)
    kafka_cluster.stop_node(3)
    assert kafka_cluster.live_brokers() == {1, 2}
    # RF 3 with min.insync.replicas 2: acks=all still succeeds with one node down
    producer = Producer(
        {"bootstrap.servers": kafka_cluster.bootstrap, "acks": "all", "enable.idempotence": True}
    )
    errors: list[KafkaError | None] = []
    producer.produce(
        topic, value=b"while node 3 is down", on_delivery=lambda e, _m: errors.append(e)
    )
    assert producer.flush(60) == 0
    assert errors == [None]
    kafka_cluster.start_node(3)
    assert kafka_cluster.live_brokers() == {1, 2, 3}
    message = _consume_one(kafka_cluster.bootstrap, topic, f"g-{unique_name}")
    assert message.value() == b"while node 3 is down"
