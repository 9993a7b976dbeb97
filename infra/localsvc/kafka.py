"""Kafka in KRaft mode: the single local broker and the 3-node cluster for fault tests."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import (
    CACHE,
    DEPENDENCY_PLUGIN,
    INFRA,
    LOGS,
    ROOT,
    RUN,
    START_TIMEOUT_S,
    InfraError,
    Proc,
    install_artifact,
    java_binary,
    locked,
    port_open,
    rel,
    stop_all,
    tail,
)
from .kafka_protocol import KafkaMetadata, kafka_answers, kafka_metadata

logger = logging.getLogger(__name__)

KAFKA_VERSION = os.environ.get("ONAIR_KAFKA_VERSION", "4.4.0")
KAFKA_HOST = "localhost"
KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
CLUSTER_NODES = (1, 2, 3)
CLUSTER_BROKER_PORT_BASE = 19091  # node N listens on 19091 + N: 19092, 19093, 19094
CLUSTER_CONTROLLER_PORT_BASE = 19191  # node N's controller: 19192, 19193, 19194

KAFKA_JVM_FLAGS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # room for 16 MiB GOP chunks plus batch overhead


def install_kafka(version: str = KAFKA_VERSION) -> Path:
    """Resolve Kafka ``version`` (4.x) and its runtime classpath; returns the libs dir."""
    if not version.startswith("4."):
        raise InfraError(f"Kafka {version} is not a 4.x release; onair runs Kafka 4 (KRaft)")
    home = CACHE / f"kafka-{version}"
    libs = home / "libs"
    fetch = [
        "-f",
        str(INFRA / "maven" / "kafka-pom.xml"),
        f"-Dkafka.version={version}",
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    return install_artifact(f"Kafka {version}", home, fetch, libs)


# ------------------------------------------------------------------------------ Kafka


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node (broker + controller in one JVM)."""

    name: str
    node_id: int
    port: int
    controller_port: int
    home: Path  # holds server.properties, cluster.id, data/, kafka.pid
    voters: str
    cluster_size: int
    heap: str

    @property
    def proc(self) -> Proc:
        return Proc(
            name=self.name,
            pid_file=self.home / "kafka.pid",
            log_file=LOGS / f"{self.name}.log",
            host=KAFKA_HOST,
            port=self.port,
            marker=str(self.home / "server.properties"),
        )

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def properties(self) -> dict[str, str]:
        replication = min(3, self.cluster_size)
        min_isr = 2 if self.cluster_size >= 3 else 1
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": (
                f"PLAINTEXT://{KAFKA_HOST}:{self.port},CONTROLLER://{KAFKA_HOST}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{KAFKA_HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": str(replication),
            "min.insync.replicas": str(min_isr),
            "offsets.topic.replication.factor": str(replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": str(replication),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(MAX_MESSAGE_BYTES),
            "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
            "socket.request.max.bytes": str(128 * 1024 * 1024),
            "log.retention.hours": "168",
            "log.segment.bytes": str(256 * 1024 * 1024),
            "num.recovery.threads.per.data.dir": "1",
        }
        if self.cluster_size > 1:
            # Notice a dead node in 4 s, not 9 s: fault tests wait on this, and a node that
            # restarts is refused (DuplicateBrokerRegistration) until its old session expires.
            props["broker.heartbeat.interval.ms"] = "1000"
            props["broker.session.timeout.ms"] = "4000"
        return props

    def write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "server.properties"
        lines = [f"# written by infra/localsvc for {self.name}; edits are overwritten"]
        lines += [f"{key}={value}" for key, value in self.properties().items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def cluster_id(self, shared: Path) -> str:
        """The cluster id, made once and kept in ``shared``: 16 random bytes, base64url."""
        if shared.exists():
            return shared.read_text().strip()
        shared.parent.mkdir(parents=True, exist_ok=True)
        value = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        shared.write_text(value + "\n")
        return value

    def format_command(self, libs: Path, cluster_id: str) -> list[str] | None:
        """Kafka's StorageTool command that formats this node's storage, None if done."""
        if (self.data_dir / "meta.properties").exists():
            return None
        return [
            java_binary(),
            f"-Dlog4j2.configurationFile={INFRA / 'tools-log4j2.xml'}",
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.write_config()),
            "--ignore-formatted",
        ]

    def spawn(self, libs: Path) -> int:
        config = self.write_config()
        proc = self.proc
        cmd = [
            java_binary(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            *KAFKA_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={INFRA / 'kafka-log4j2.xml'}",
            f"-Donair.log.file={proc.log_file}",
            f"-Dkafka.logs.dir={LOGS}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(config),
        ]
        return proc.spawn(cmd, LOGS / f"{self.name}.out")


def _format(nodes: Sequence[KafkaNode], libs: Path, cluster_id: str) -> None:
    """Format the storage of the nodes that need it, all at once (a JVM start each)."""
    running = []
    for node in nodes:
        cmd = node.format_command(libs, cluster_id)
        if cmd is not None:
            child = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            running.append((node, child))
    failed = []
    for node, child in running:
        output, _ = child.communicate()
        if child.returncode != 0:
            failed.append(f"formatting {node.name}'s storage failed:\n{output}")
    if failed:
        raise InfraError("\n".join(failed))


def single_node() -> KafkaNode:
    return KafkaNode(
        name="kafka",
        node_id=1,
        port=KAFKA_PORT,
        controller_port=KAFKA_CONTROLLER_PORT,
        home=RUN / "kafka",
        voters=f"1@{KAFKA_HOST}:{KAFKA_CONTROLLER_PORT}",
        cluster_size=1,
        heap=os.environ.get("ONAIR_KAFKA_HEAP", "1g"),
    )


def cluster_node(node_id: int) -> KafkaNode:
    if node_id not in CLUSTER_NODES:
        raise InfraError(f"the cluster has nodes {CLUSTER_NODES}, not {node_id}")
    voters = ",".join(f"{n}@{KAFKA_HOST}:{CLUSTER_CONTROLLER_PORT_BASE + n}" for n in CLUSTER_NODES)
    return KafkaNode(
        name=f"kafka-cluster-node{node_id}",
        node_id=node_id,
        port=CLUSTER_BROKER_PORT_BASE + node_id,
        controller_port=CLUSTER_CONTROLLER_PORT_BASE + node_id,
        home=RUN / "kafka-cluster" / f"node{node_id}",
        voters=voters,
        cluster_size=len(CLUSTER_NODES),
        heap=os.environ.get("ONAIR_KAFKA_CLUSTER_HEAP", "512m"),
    )


CLUSTER_BOOTSTRAP = ",".join(f"{KAFKA_HOST}:{CLUSTER_BROKER_PORT_BASE + n}" for n in CLUSTER_NODES)
CLUSTER_ID_FILE = RUN / "kafka-cluster" / "cluster.id"


def _wait_kafka(nodes: Sequence[KafkaNode], brokers: int, started: float) -> None:
    """Wait until every node answers Metadata listing at least ``brokers`` live brokers."""
    pending = list(nodes)
    while pending:
        for node in list(pending):
            if kafka_answers(KAFKA_HOST, node.port, brokers):
                pending.remove(node)
            elif node.proc.running_pid() is None:
                raise InfraError(
                    f"{node.name} exited while starting; last lines of {rel(node.proc.log_file)}"
                    f":\n{tail(node.proc.log_file)}\n{tail(LOGS / f'{node.name}.out', 10)}"
                )
        if not pending:
            break
        if time.monotonic() - started > START_TIMEOUT_S:
            names = ", ".join(n.name for n in pending)
            raise InfraError(
                f"{names} did not answer within {START_TIMEOUT_S:.0f} s; see "
                f"{rel(pending[0].proc.log_file)}:\n{tail(pending[0].proc.log_file)}"
            )
        time.sleep(0.3)


def _running_version(node: KafkaNode) -> str:
    try:
        return (node.home / "version").read_text().strip()
    except OSError:
        return "unknown version"


def _start_nodes(
    nodes: Sequence[KafkaNode], brokers: int, cluster_id_file: Path, *, wait: bool
) -> bool:
    """Start the nodes that are not running; True if any was started."""
    libs = install_kafka()
    started = time.monotonic()  # time the start, not the first download
    to_start = []
    for node in nodes:
        pid = node.proc.running_pid()
        if pid is not None:
            logger.info(
                "%s: already running (pid %d) on %s:%d", node.name, pid, KAFKA_HOST, node.port
            )
            continue
        if port_open(KAFKA_HOST, node.port) or port_open(KAFKA_HOST, node.controller_port):
            if node.cluster_size == 1 and kafka_answers(KAFKA_HOST, node.port):
                logger.info(
                    "%s: a Kafka broker not started by this repo answers on %s:%d; reusing it",
                    node.name,
                    KAFKA_HOST,
                    node.port,
                )
                continue
            raise InfraError(
                f"{node.name}: port {node.port} or {node.controller_port} is taken by another "
                "process; stop it first"
            )
        to_start.append(node)
    if not to_start:
        return False
    cluster_id = nodes[0].cluster_id(cluster_id_file)
    _format(to_start, libs, cluster_id)
    for node in to_start:
        pid = node.spawn(libs)
        (node.home / "version").write_text(KAFKA_VERSION + "\n")
        logger.info("%s: started pid %d (Kafka %s, KRaft)", node.name, pid, KAFKA_VERSION)
    if wait:
        _wait_kafka(to_start, brokers, started)
        for node in to_start:
            logger.info(
                "%s: answers on %s:%d after %.1f s; logs: %s",
                node.name,
                KAFKA_HOST,
                node.port,
                time.monotonic() - started,
                rel(node.proc.log_file),
            )
    return True


def kafka_start(*, wait: bool = True) -> bool:
    node = single_node()
    with locked("kafka"):
        return _start_nodes([node], 1, node.home / "cluster.id", wait=wait)


def kafka_stop() -> bool:
    with locked("kafka"):
        return single_node().proc.stop()


def kafka_wait() -> None:
    node = single_node()
    if node.proc.running_pid() is None and not kafka_answers(KAFKA_HOST, node.port):
        raise InfraError("kafka is not running: run `make services` (or infra/kafka start)")
    _wait_kafka([node], 1, time.monotonic())


def kafka_status() -> bool:
    node = single_node()
    return _status_line(node, 1)


def _status_line(node: KafkaNode, brokers: int) -> bool:
    pid = node.proc.running_pid()
    try:
        meta: KafkaMetadata | None = kafka_metadata(KAFKA_HOST, node.port)
    except (OSError, struct.error):
        meta = None
    where = f"{KAFKA_HOST}:{node.port}"
    if meta is not None:
        owner = f"pid {pid}, Kafka {_running_version(node)}" if pid else "not started by this repo"
        ids = ",".join(str(b[0]) for b in meta.brokers)
        print(
            f"{node.name}: running on {where} ({owner}, KRaft cluster {meta.cluster_id}, "
            f"live brokers [{ids}]); logs: {rel(node.proc.log_file)}"
        )
        return len(meta.brokers) >= brokers
    if pid is not None:
        print(f"{node.name}: pid {pid} is up but {where} does not answer yet")
        return False
    print(f"{node.name}: stopped")
    return False


def kafka_restart() -> None:
    node = single_node()
    with locked("kafka"):
        if node.proc.running_pid() is None and kafka_answers(KAFKA_HOST, node.port):
            raise InfraError(
                f"the broker on {KAFKA_HOST}:{node.port} was not started by this repo; "
                "cannot restart it"
            )
        node.proc.stop()
        _start_nodes([node], 1, node.home / "cluster.id", wait=True)


def cluster_start(*, fresh: bool = False) -> bool:
    nodes = [cluster_node(n) for n in CLUSTER_NODES]
    with locked("kafka-cluster"):
        if fresh and all(node.proc.running_pid() is None for node in nodes):
            shutil.rmtree(RUN / "kafka-cluster", ignore_errors=True)
        started = _start_nodes(nodes, len(nodes), CLUSTER_ID_FILE, wait=True)
        _wait_cluster_consistent()
        return started


CLUSTER_STOP_TIMEOUT_S = 10.0  # the last node up has no quorum to finish controlled shutdown


def cluster_stop() -> bool:
    with locked("kafka-cluster"):
        procs = [cluster_node(n).proc for n in CLUSTER_NODES]
        return stop_all(procs, CLUSTER_STOP_TIMEOUT_S)


def cluster_status() -> bool:
    ok = True
    for n in CLUSTER_NODES:
        ok = _status_line(cluster_node(n), len(CLUSTER_NODES)) and ok
    return ok


def _wait_cluster_consistent(timeout_s: float = START_TIMEOUT_S) -> set[int]:
    """Wait until every running node lists exactly the running nodes as live brokers."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = [cluster_node(n) for n in CLUSTER_NODES]
        running = {n.node_id for n in nodes if n.proc.running_pid() is not None}
        views: dict[int, set[int] | str] = {}
        for node in nodes:
            if node.node_id in running:
                try:
                    meta = kafka_metadata(KAFKA_HOST, node.port)
                    views[node.node_id] = {b[0] for b in meta.brokers}
                except (OSError, struct.error) as err:
                    views[node.node_id] = f"no answer ({err})"
        if not running:
            raise InfraError("no cluster node is running (stopped by another process?)")
        if all(view == running for view in views.values()):
            return running
        if time.monotonic() > deadline:
            raise InfraError(
                f"the cluster did not settle in {timeout_s:.0f} s: running nodes "
                f"{sorted(running)}, live brokers seen by each: {views}"
            )
        time.sleep(0.3)


def node_stop(node_id: int, *, kill: bool = False) -> None:
    """Stop one cluster node; returns once the other nodes no longer list it."""
    node = cluster_node(node_id)
    with locked("kafka-cluster"):
        if not node.proc.stop(kill=kill):
            logger.info("%s: was not running", node.name)
        started = time.monotonic()
        live = _wait_cluster_consistent()
        logger.info(
            "cluster: live brokers %s (settled in %.1f s)", sorted(live), time.monotonic() - started
        )


def node_start(node_id: int) -> None:
    """Start one cluster node; returns once every running node lists every running node."""
    node = cluster_node(node_id)
    with locked("kafka-cluster"):
        _start_nodes([node], 1, CLUSTER_ID_FILE, wait=True)
        live = _wait_cluster_consistent()
        logger.info("cluster: live brokers %s", sorted(live))


# ---------------------------------------------------------------- scratch brokers

SCRATCH_PREFIX = "kafka-scratch-"


def scratch_node(home: Path, port: int, controller_port: int) -> KafkaNode:
    """A single-node broker of its own (own ports, own state in ``home``): for tests that
    need a broker formatted a moment ago, beside the shared one on 9092."""
    return KafkaNode(
        name=f"{SCRATCH_PREFIX}{port}",
        node_id=1,
        port=port,
        controller_port=controller_port,
        home=home,
        voters=f"1@{KAFKA_HOST}:{controller_port}",
        cluster_size=1,
        heap=os.environ.get("ONAIR_KAFKA_SCRATCH_HEAP", "512m"),
    )


def scratch_start(home: Path, port: int, controller_port: int) -> None:
    """Format ``home`` anew (whatever it held is wiped) and start a broker on ``port``;
    returns once it answers Metadata, as `make services` does: topics, the group
    coordinator and everything else are then still to be created by its first clients."""
    node = scratch_node(home, port, controller_port)
    if node.proc.running_pid() is not None:
        raise InfraError(f"{node.name}: already running from {rel(home)}; stop it first")
    shutil.rmtree(home, ignore_errors=True)
    _start_nodes([node], 1, home / "cluster.id", wait=True)


def scratch_stop(home: Path) -> bool:
    """Stop the scratch broker whose state is in ``home`` (SIGTERM, SIGKILL after a while)."""
    config = home / "server.properties"
    if not config.exists():
        return False
    props = dict(line.split("=", 1) for line in config.read_text().splitlines() if "=" in line)
    listeners = props.get("listeners", "")
    ports = [int(part.rsplit(":", 1)[1]) for part in listeners.split(",") if ":" in part]
    if len(ports) != 2:
        raise InfraError(f"{rel(config)}: cannot read the listeners ({listeners!r})")
    return scratch_node(home, ports[0], ports[1]).proc.stop()


def kafka_tool(args: Sequence[str]) -> int:
    """Run one of Kafka's own tool classes (``org.apache.kafka.tools.X``) on the classpath."""
    libs = install_kafka()
    main_class = args[0] if "." in args[0] else f"org.apache.kafka.tools.{args[0]}"
    cmd = [
        java_binary(),
        f"-Dlog4j2.configurationFile={INFRA / 'tools-log4j2.xml'}",
        "-cp",
        f"{libs}/*",
        main_class,
        *args[1:],
    ]
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode
