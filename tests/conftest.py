"""Fixtures for tests that use the real services: Kafka (KRaft) and S3 (S3Proxy).

``make test`` (or ``make services``) starts them; these fixtures never start a fake and never
skip: a test that needs a service which does not answer errors with a message saying so.

- ``kafka_bootstrap`` (session): ``ONAIR_KAFKA_BOOTSTRAP``, default ``localhost:9092``,
  checked to answer metadata.
- ``s3_config`` (session): :class:`S3Config` from ``ONAIR_S3_*``, bucket checked to exist;
  ``S3Config.client()`` makes a boto3 client.
- ``kafka_restart`` (function): a callable that restarts the single local broker (through
  ``infra/kafka restart``) and returns once it answers again.
- ``kafka_cluster`` (session): starts the 3-broker KRaft cluster (``infra/kafka
  cluster-start``), yields a :class:`KafkaCluster` (``.bootstrap``, ``stop_node(n)``,
  ``start_node(n)``) and stops the cluster at the end if it started it.
- ``unique_name`` (function): a name unique to this test run, for topics, groups and keys.

Tests marked ``integration`` or ``e2e`` get Kafka and S3 checked before they run; tests marked
``cluster`` get the cluster, and any node such a test stopped is started again after it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
INFRA_KAFKA = ROOT / "infra" / "kafka"
CLUSTER_NODES = (1, 2, 3)
CLUSTER_BOOTSTRAP = ",".join(f"localhost:{19091 + n}" for n in CLUSTER_NODES)
SERVICES_HINT = "start the services with `make services` (or run the suite with `make test`)"
INFRA_TIMEOUT_S = 240.0
CLUSTER_LEASE = ROOT / ".run" / "kafka-cluster.lease"
CLUSTER_LEASE_TIMEOUT_S = 900.0


def live_brokers(bootstrap: str, timeout_s: float = 10.0) -> set[int]:
    """Ids of the brokers a metadata request to ``bootstrap`` reports as alive."""
    admin = AdminClient({"bootstrap.servers": bootstrap}, logger=logger)
    metadata = admin.list_topics(timeout=timeout_s)
    return {int(broker_id) for broker_id in metadata.brokers}


def wait_for_brokers(bootstrap: str, expected: set[int], timeout_s: float = 60.0) -> None:
    """Wait until exactly ``expected`` brokers are alive; AssertionError with the last seen."""
    deadline = time.monotonic() + timeout_s
    seen: set[int] | str = "nothing"
    while time.monotonic() < deadline:
        try:
            seen = live_brokers(bootstrap, timeout_s=5.0)
        except KafkaException as err:
            seen = str(err)
        if seen == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{bootstrap}: expected brokers {sorted(expected)}, saw {seen}")


def _infra_kafka(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INFRA_KAFKA), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=INFRA_TIMEOUT_S,
        check=False,
    )


def _infra_kafka_ok(*args: str) -> str:
    result = _infra_kafka(*args)
    if result.returncode != 0:
        pytest.fail(
            f"infra/kafka {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}",
            pytrace=False,
        )
    return result.stdout


# ---------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The bootstrap servers of the running broker; errors (no skip) if it does not answer."""
    bootstrap = os.environ.get("ONAIR_KAFKA_BOOTSTRAP", "localhost:9092")
    try:
        live_brokers(bootstrap, timeout_s=10.0)
    except KafkaException as err:
        pytest.fail(f"Kafka at {bootstrap} does not answer ({err}): {SERVICES_HINT}", pytrace=False)
    return bootstrap


@pytest.fixture
def kafka_restart(kafka_bootstrap: str) -> Callable[[], None]:
    """Restart the single local broker (SIGTERM, start again) and wait until it answers.

    Only for the broker that infra/ started on localhost:9092: other tests running at the same
    time see the outage too, so use it only in tests about surviving a broker restart.
    """

    def restart() -> None:
        _infra_kafka_ok("restart")
        wait_for_brokers(kafka_bootstrap, {1})

    return restart


@dataclass
class KafkaCluster:
    """The local 3-node KRaft cluster (each node is broker + controller)."""

    bootstrap: str = CLUSTER_BOOTSTRAP
    node_ids: tuple[int, ...] = CLUSTER_NODES
    stopped: set[int] = field(default_factory=set)

    def node_bootstrap(self, node_id: int) -> str:
        """The listener of one node alone."""
        return f"localhost:{19091 + node_id}"

    def live_brokers(self) -> set[int]:
        return live_brokers(self.bootstrap)

    def stop_node(self, node_id: int, *, kill: bool = False) -> None:
        """Stop one node: SIGTERM (controlled shutdown) or, with ``kill``, SIGKILL (a crash).

        Returns once the process is gone and the other nodes no longer list it.
        """
        _infra_kafka_ok("node-stop", str(node_id), *(["--kill"] if kill else []))
        self.stopped.add(node_id)
        alive = set(self.node_ids) - self.stopped
        wait_for_brokers(",".join(self.node_bootstrap(n) for n in sorted(alive)), alive)

    def start_node(self, node_id: int) -> None:
        """Start a stopped node; returns once every running node lists it as alive."""
        _infra_kafka_ok("node-start", str(node_id))
        self.stopped.discard(node_id)
        alive = set(self.node_ids) - self.stopped
        wait_for_brokers(self.bootstrap, alive)

    def heal(self) -> None:
        """Start every node a test stopped."""
        for node_id in sorted(self.stopped):
            self.start_node(node_id)


@contextlib.contextmanager
def _cluster_lease(timeout_s: float = CLUSTER_LEASE_TIMEOUT_S) -> Iterator[None]:
    """Hold the cluster alone for this pytest session.

    Tests stop and start nodes, so two sessions (two developers, or an agent and CI on one
    machine) sharing the cluster would break each other; the second one waits here.
    """
    CLUSTER_LEASE.parent.mkdir(parents=True, exist_ok=True)
    with CLUSTER_LEASE.open("a") as lease:
        deadline = time.monotonic() + timeout_s
        waited = False
        while True:
            try:
                fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"another pytest session has held the 3-broker cluster for "
                        f"{timeout_s:.0f} s ({CLUSTER_LEASE})",
                        pytrace=False,
                    )
                if not waited:
                    logger.warning("waiting for another pytest session to release the cluster")
                    waited = True
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(lease, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    """The 3-broker cluster on localhost:19092-19094, started fresh unless already running.

    The session holds the cluster alone (see ``_cluster_lease``) and stops it at the end if it
    started it; a cluster that was already running is only healed (stopped nodes restarted).
    """
    with _cluster_lease():
        already_running = _infra_kafka("cluster-status").returncode == 0
        if not already_running:
            started = time.monotonic()
            _infra_kafka_ok("cluster-start", "--fresh")
            logger.info("3-broker cluster up in %.1f s", time.monotonic() - started)
        cluster = KafkaCluster()
        wait_for_brokers(cluster.bootstrap, set(cluster.node_ids))
        try:
            yield cluster
        finally:
            if already_running:
                cluster.heal()
            else:
                _infra_kafka_ok("cluster-stop")


# ------------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3Config:
    """Where the S3 server is and how to sign in; ``client()`` makes a boto3 S3 client."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    def client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )


@pytest.fixture(scope="session")
def s3_config() -> S3Config:
    """The S3 server from ``ONAIR_S3_*``; errors (no skip) if it or the bucket is missing."""
    from botocore.exceptions import BotoCoreError, ClientError

    config = S3Config(
        endpoint=os.environ.get("ONAIR_S3_ENDPOINT", "http://127.0.0.1:9000"),
        access_key=os.environ.get("ONAIR_S3_ACCESS_KEY", "onair"),
        secret_key=os.environ.get("ONAIR_S3_SECRET_KEY", "onair-secret-key"),
        bucket=os.environ.get("ONAIR_S3_BUCKET", "onair"),
    )
    client = config.client()
    try:
        client.head_bucket(Bucket=config.bucket)
    except (BotoCoreError, ClientError) as err:
        pytest.fail(
            f"S3 at {config.endpoint} (bucket {config.bucket}) does not answer ({err}): "
            f"{SERVICES_HINT}",
            pytrace=False,
        )
    finally:
        client.close()
    return config


# ----------------------------------------------------------------------------- misc


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """``<test name>-<8 hex>``: unique per test and run, valid in Kafka topic names."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _services_for_marked_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Check Kafka and S3 before integration/e2e tests; give cluster tests a healed cluster;
    collect garbage after them so a leaked resource is blamed on the test that leaked it."""
    node = request.node
    uses_services = bool(node.get_closest_marker("integration") or node.get_closest_marker("e2e"))
    if uses_services:
        request.getfixturevalue("kafka_bootstrap")
        request.getfixturevalue("s3_config")
    cluster: KafkaCluster | None = None
    if node.get_closest_marker("cluster"):
        cluster = request.getfixturevalue("kafka_cluster")
    yield
    if cluster is not None:
        cluster.heal()
    if uses_services or cluster is not None:
        # Clients, sockets and pipes left in reference cycles would otherwise be collected
        # (with a ResourceWarning, an error here) during whichever test runs next.
        gc.collect()
